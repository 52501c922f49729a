"""One real SmolLM2 runtime shared by the generation tests (one scheduler uses it at a time)."""

from __future__ import annotations

import pytest

from runtimes.torch_generation import TorchCausalLM
from tests.generation_models import smollm_runtime


@pytest.fixture(scope="session")
def smollm() -> TorchCausalLM:
    return smollm_runtime()
