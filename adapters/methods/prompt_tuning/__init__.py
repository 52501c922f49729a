"""Prompt tuning (PEFT ``PromptTuningConfig``) of a causal LM: trains virtual prompt tokens only."""
