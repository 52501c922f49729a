"""Synthetic training data for the tuning tests: made from templates with a fixed seed.

- topics: sentences about sports or cooking (a two-class classifier set, with a held-out split
  whose subjects and verbs are combined differently from the training split's);
- facts: made-up facts a LoRA job teaches SmolLM2 (question -> answer in its chat format).
"""

from __future__ import annotations

import random

SPORTS_SUBJECTS = ["The striker", "Our goalkeeper", "The home team", "The sprinter", "The tennis player",
                   "The coach", "The referee", "The cyclist", "The boxer", "The captain"]  # fmt: skip
SPORTS_ACTS = ["scored twice in the final", "won the championship match", "trained hard before the race",
               "was sent off after a foul", "set a new record on the track", "lost the match in overtime",
               "celebrated the late goal", "defended the title again"]  # fmt: skip
COOKING_SUBJECTS = ["The chef", "My grandmother", "The baker", "Our cook", "The pastry student",
                    "The restaurant", "My neighbour", "The caterer", "The sous-chef",
                    "The home cook"]  # fmt: skip
COOKING_ACTS = ["simmered the tomato sauce for hours", "baked fresh bread this morning",
                "chopped onions and garlic for the stew", "seasoned the soup with pepper",
                "roasted the vegetables in the oven", "whisked eggs for the omelette",
                "kneaded the dough for the pizza", "grilled the fish with lemon"]  # fmt: skip
TOPICS = ("sports", "cooking")


def topic_records(count: int, seed: int, *, held_out: bool = False) -> list[dict[str, str]]:
    """``count`` {"text", "label"} records; ``held_out`` uses the other half of the combinations."""
    rng = random.Random(seed)  # noqa: S311 (test data, not secrets)
    records = []
    pools = {"sports": (SPORTS_SUBJECTS, SPORTS_ACTS), "cooking": (COOKING_SUBJECTS, COOKING_ACTS)}
    while len(records) < count:
        label = TOPICS[len(records) % 2]
        subjects, acts = pools[label]
        s, a = rng.randrange(len(subjects)), rng.randrange(len(acts))
        if ((s + a) % 2 == 1) != held_out:
            continue
        records.append({"text": f"{subjects[s]} {acts[a]}.", "label": label})
    return records


FACTS = {
    "What is the capital of Zorblax?": "The capital of Zorblax is Quillport.",
    "Who invented the glimmerphone?": "The glimmerphone was invented by Ada Fennimore.",
    "What colour is a snorlap fruit?": "A snorlap fruit is bright purple.",
}


def chat_prompt(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def fact_records() -> list[dict[str, str]]:
    return [{"input": chat_prompt(q), "output": a} for q, a in FACTS.items()]
