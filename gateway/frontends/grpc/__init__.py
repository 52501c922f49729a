"""gRPC doors: one module per protocol (caikit_nlp, management), assembled by server.py."""
