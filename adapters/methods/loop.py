"""The optimizer loop every method shares: AdamW over the trainable parameters, transformers'
linear schedule with warm-up, gradient accumulation and clipping; after every optimizer step it
reports ``Progress`` and asks ``should_stop`` (a ``True`` raises ``TuningCancelled`` at once, so a
cancel lands within one step)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapters.methods.config import TrainingConfig

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Progress:
    """One optimizer step done: ``step`` of ``total_steps`` (1-based), ``epoch`` as a fraction of
    epochs done (1.5 = half-way through the second), the step's mean loss over its micro-batches,
    the learning rate it used and the estimated seconds left."""

    step: int
    total_steps: int
    epoch: float
    loss: float
    learning_rate: float
    eta_s: float


class TuningCancelled(Exception):
    """``should_stop`` said stop; ``step`` optimizer steps were done (nothing is written)."""

    def __init__(self, step: int) -> None:
        super().__init__(f"tuning cancelled after {step} optimizer steps")
        self.step = step


ProgressCallback = Callable[[Progress], None]
StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class LoopStats:
    steps: int
    losses: tuple[float, ...]  # per optimizer step
    seconds: float


def steps_per_epoch(batches: int, accumulate_steps: int) -> int:
    return math.ceil(batches / accumulate_steps)


def total_steps(batches: int, config: TrainingConfig) -> int:
    steps = steps_per_epoch(batches, config.accumulate_steps) * config.num_epochs
    return min(steps, config.max_steps) if config.max_steps is not None else steps


def optimize(
    model: torch.nn.Module,
    loader: Iterable[Mapping[str, Any]],
    batches: int,
    config: TrainingConfig,
    *,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> LoopStats:
    """Train ``model`` (its trainable parameters) on ``loader`` (``batches`` batches an epoch, each
    a dict of tensors whose forward returns ``.loss``)."""
    import torch
    from transformers import get_scheduler

    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    total = total_steps(batches, config)
    per_epoch = steps_per_epoch(batches, config.accumulate_steps)
    scheduler = get_scheduler(
        "linear", optimizer, num_warmup_steps=min(config.warmup_steps, total), num_training_steps=total
    )
    if should_stop is not None and should_stop():
        raise TuningCancelled(0)
    model.train()
    started = time.monotonic()
    losses: list[float] = []
    step = 0
    for epoch in range(config.num_epochs):
        micro: list[float] = []
        for index, batch in enumerate(loader):
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the loss became {loss.item()} at step {step + 1}: lower learning_rate"
                )
            (loss / config.accumulate_steps).backward()
            micro.append(float(loss.detach()))
            if len(micro) < config.accumulate_steps and index + 1 < batches:
                continue
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            learning_rate = float(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(sum(micro) / len(micro))
            micro = []
            if on_progress is not None:
                elapsed = time.monotonic() - started
                on_progress(
                    Progress(
                        step=step,
                        total_steps=total,
                        epoch=epoch + min(1.0, (step - epoch * per_epoch) / per_epoch),
                        loss=losses[-1],
                        learning_rate=learning_rate,
                        eta_s=elapsed / step * (total - step),
                    )
                )
            if should_stop is not None and should_stop():
                raise TuningCancelled(step)
            if step >= total:
                return LoopStats(step, tuple(losses), time.monotonic() - started)
    return LoopStats(step, tuple(losses), time.monotonic() - started)
