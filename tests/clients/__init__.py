"""Scripts that drive real third-party clients against a running Taskgate, each in its own venv."""
