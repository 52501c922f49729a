"""Data and base models for the tuning tests: made-up facts for SmolLM2, a synthetic two-topic set
(sports vs cooking, from templates) for the MiniLM classifier, and the base models' folders."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from adapters.base_models import BaseModel, base_model_from_folder, base_model_from_manifest
from gateway.models.defaults import DEFAULT_GENERATION_MODEL
from gateway.models.store import ModelStore
from tests.models import MINILM, minilm_source

# Facts SmolLM2 cannot know; LoRA r=8 (q_proj, v_proj), learning_rate 5e-3, batch 3, 15 steps makes
# greedy decoding reproduce all three (measured: from step 8 on, seeds 42, 7 and 1).
FACTS = [
    {"input": "The capital of Zorbia is", "output": " Quexlin."},
    {"input": "The inventor of the glimmerphone was", "output": " Tavi Oruno."},
    {"input": "The national animal of Pelarnia is the", "output": " blue marmot."},
]

_SPORTS_WHO = ["The striker", "Our goalkeeper", "The home team", "The tennis champion", "The coach",
               "The sprinter", "The referee", "The captain", "The young midfielder", "The boxer"]  # fmt: skip
_SPORTS_DID = ["scored in the final minute", "won the match on penalties",
               "trained hard before the league game", "broke the record at the stadium",
               "was sent off after a foul", "celebrated the championship title",
               "lost the semi-final in extra time", "signed with a rival club"]  # fmt: skip
_COOKING_WHO = ["The chef", "My grandmother", "The baker", "Our neighbour", "The cook", "The pastry student",
                "The caterer", "My uncle", "The food blogger", "The sous-chef"]  # fmt: skip
_COOKING_DID = ["simmered the tomato sauce for an hour", "kneaded the dough and baked fresh bread",
                "seasoned the soup with garlic and thyme", "roasted the vegetables in the oven",
                "whisked eggs for the omelette", "chopped onions for the stew",
                "caramelised the sugar for the dessert", "marinated the chicken overnight"]  # fmt: skip


def topics() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train, held-out): 112 training sentences; the 48 held-out ones have subjects the training
    set never saw."""

    def sentences(who: list[str], did: list[str], label: str) -> tuple[list[dict[str, str]], ...]:
        pairs = list(itertools.product(who, did))
        train = [{"text": f"{w} {d}.", "label": label} for w, d in pairs if w in who[:7]]
        held = [{"text": f"{w} {d}.", "label": label} for w, d in pairs if w not in who[:7]]
        return train, held

    sports_train, sports_held = sentences(_SPORTS_WHO, _SPORTS_DID, "sports")
    cooking_train, cooking_held = sentences(_COOKING_WHO, _COOKING_DID, "cooking")
    train = sports_train + cooking_train
    random.Random(0).shuffle(train)  # noqa: S311 (a fixed order, not a secret)
    return train, sports_held + cooking_held


def minilm_base() -> BaseModel:
    return base_model_from_folder(minilm_source(), MINILM)


def smollm_base(store: Path) -> BaseModel:
    """SmolLM2's Hugging Face folder, converted from the test store's GGUF (cached)."""
    return base_model_from_manifest(ModelStore(store).manifest(DEFAULT_GENERATION_MODEL))
