"""Where a benchmark writes: the full matrix under its own name, a smaller run beside it."""

from __future__ import annotations

import argparse


def results_stem(
    base: str, parser: argparse.ArgumentParser, args: argparse.Namespace, scope: tuple[str, ...]
) -> str:
    """``base`` when every option in ``scope`` is at its default, else ``base-partial``.

    A smoke run (fewer clients, fewer tokens, one system) then never overwrites the results of
    the full run that a closing note quotes.
    """
    partial = any(getattr(args, name) != parser.get_default(name) for name in scope)
    return f"{base}-partial" if partial else base
