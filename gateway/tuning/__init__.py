"""Tuning in the serving process: the tuning API over the job manager (``service``), tuned
adapters in serving (``serving``) and the adapters held in memory (``cache``)."""
