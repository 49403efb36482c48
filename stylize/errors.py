"""The exceptions the CLI turns into one line on stderr and an exit code."""


class StylizeError(Exception):
    """A problem the user can fix: bad input, missing file, wrong settings."""

    exit_code = 2


class TrainingDiverged(StylizeError):
    """The loss stopped being finite; nothing after the last good step was saved."""

    exit_code = 1


class TrainingInterrupted(StylizeError):
    """Ctrl-C: a checkpoint was saved and the run can be resumed."""

    exit_code = 130
