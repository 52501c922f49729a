"""Peer systems (KServe, Caikit) for the encoder benchmark; filled in from bench/peers/."""

from __future__ import annotations


def peer_systems() -> list[object]:
    return []
