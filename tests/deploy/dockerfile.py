"""Reading deploy/Dockerfile: its instructions, the final image's environment and entrypoint."""

from __future__ import annotations

import json
import shlex

from tests.deploy.kube import DEPLOY

DOCKERFILE = DEPLOY / "Dockerfile"


def instructions(stage: int | None = None) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile (of one build stage when given), continuations joined."""
    logical, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            logical.append(pending.strip())
            pending = ""
    parsed = [(text.split(" ", 1)[0].upper(), text.partition(" ")[2]) for text in logical]
    if stage is None:
        return parsed
    stages: list[list[tuple[str, str]]] = []
    for item in parsed:
        if item[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(item)
    return stages[stage]


def image_env() -> dict[str, str]:
    env = {}
    for kind, arguments in instructions(-1):
        if kind == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def entrypoint() -> list[str]:
    (value,) = [json.loads(arguments) for kind, arguments in instructions(-1) if kind == "ENTRYPOINT"]
    return list(value)
