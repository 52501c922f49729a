"""A Taskgate runtime hosted as a ``kserve.Model`` under KServe's ModelServer (OIP v2).

``taskgate kserve`` / ``python -m runtimes.kserve`` serve one Taskgate model folder as a
standard KServe predictor: what a KServe ServingRuntime container runs. kserve is imported only
in this package's modules that need it (``model``, ``model_server``), never at package import.
"""
