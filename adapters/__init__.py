"""Adapter store and tuning methods (PEFT).

Tuning, the adapter store and mixed-adapter serving are built by later issues; this package
exists now so that the distribution layout is stable.
"""
