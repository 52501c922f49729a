"""LoRA (PEFT ``LoraConfig``) on a causal LM's attention projections."""
