from __future__ import annotations

import math

import pytest

from stylize import StylizeError
from stylize.training.schedule import learning_rate


def test_warmup_rises_linearly_to_the_peak() -> None:
    rates = [learning_rate(step, 100, 1e-3, "cosine", warmup=10) for step in range(10)]
    assert rates == pytest.approx([1e-4 * (step + 1) for step in range(10)])


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decays_reach_zero_at_the_last_step_and_never_rise(schedule: str) -> None:
    rates = [learning_rate(step, 200, 2e-3, schedule, warmup=20) for step in range(20, 201)]
    assert rates[0] == pytest.approx(2e-3) and rates[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(later <= earlier for earlier, later in zip(rates, rates[1:], strict=False))


def test_cosine_and_linear_halfway_values() -> None:
    assert learning_rate(60, 110, 1.0, "cosine", warmup=10) == pytest.approx(0.5)
    assert learning_rate(35, 110, 1.0, "linear", warmup=10) == pytest.approx(0.75)
    assert learning_rate(35, 110, 1.0, "cosine", warmup=10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_constant_stays_at_the_peak_after_warmup() -> None:
    assert {learning_rate(step, 50, 3e-4, "constant", warmup=5) for step in range(5, 60)} == {3e-4}


def test_unknown_schedule_lists_the_valid_ones() -> None:
    with pytest.raises(StylizeError, match="lr_schedule must be one of: constant, cosine, linear; not 'step'"):
        learning_rate(0, 10, 1e-3, "step")
