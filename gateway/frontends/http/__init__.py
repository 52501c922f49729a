"""REST doors: one module per protocol (caikit_tasks, management), assembled by app.py."""
