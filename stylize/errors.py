"""The exceptions the CLI turns into one line on stderr and an exit code."""

from collections.abc import Iterable
from pathlib import Path


class StylizeError(Exception):
    """A problem the user can fix: bad input, missing file, wrong settings."""

    exit_code = 2


class TrainingDiverged(StylizeError):
    """The loss stopped being finite; nothing after the last good step was saved."""

    exit_code = 1


class TrainingInterrupted(StylizeError):
    """Ctrl-C: a checkpoint was saved and the run can be resumed from ``resume_from``."""

    exit_code = 130

    def __init__(self, message: str, resume_from: Path):
        super().__init__(message)
        self.resume_from = resume_from


class InvalidSetting(StylizeError):
    """A setting out of range, named as in the API (``batch_size``); the CLI
    names the option instead (``--batch-size``)."""

    def __init__(self, setting: str, problem: str):
        super().__init__(f"{setting} {problem}")
        self.setting = setting
        self.problem = problem


def check_choice(setting: str, value: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``. Raises InvalidSetting naming them all."""
    options = list(choices)
    if value not in options:
        raise invalid_choice(setting, value, options)
    return value


def invalid_choice(setting: str, value: object, choices: Iterable[str]) -> InvalidSetting:
    return InvalidSetting(setting, f"must be one of: {', '.join(choices)}; not {value!r}")
