"""Learning-rate schedules as pure functions of the step.

The rate is recomputed from the step before every optimizer step, so it needs
no state of its own: a resumed run continues on exactly the same curve.
"""

from __future__ import annotations

import math

from stylize.errors import check_choice

LR_SCHEDULES = ("constant", "cosine", "linear")


def check_lr_schedule(name: str) -> str:
    return check_choice("lr_schedule", name, LR_SCHEDULES)


def learning_rate(step: int, steps: int, peak: float, schedule: str, warmup: int = 0) -> float:
    """The rate for optimizer step ``step`` (0-based) of ``steps``: a linear
    warm-up over ``warmup`` steps to ``peak``, then constant, or a cosine or
    linear decay that reaches zero at the last step."""
    check_lr_schedule(schedule)
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    decay_steps = max(steps - warmup, 1)
    progress = min((step - warmup) / decay_steps, 1.0)
    if schedule == "cosine":
        return peak * 0.5 * (1 + math.cos(math.pi * progress))
    return peak * (1 - progress)
