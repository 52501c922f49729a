"""A sequence classifier on an encoder (MiniLM/BERT): a fresh head trained with LoRA or alone."""
