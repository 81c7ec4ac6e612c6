"""A stage's errors: a bad input named in one line, a diverged training, a SIGTERM, an
interrupt that has put its house in order.
"""

from __future__ import annotations


class StageError(Exception):
    """A bad input or setting: the message names the culprit and the fix."""


class Diverged(StageError):
    """A training whose loss became NaN or inf: stopped at that epoch, nothing written."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler pre-empting the job), raised like Ctrl-C so that the same
    handlers end MLflow runs as KILLED and keep what was saved."""


class Interrupted(Exception):
    """An interrupted stage that has put its house in order: one line, then ``exit_code``."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
