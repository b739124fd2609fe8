"""Errors the library raises for bad input; the CLI turns each into one line and an exit code.

Every message says what was wrong and what to do about it. Library code raises these instead of
printing, so the Python API and the CLI fail the same way.
"""

from __future__ import annotations


class AlignbenchError(Exception):
    """Base class: a user-facing problem. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class AlignbenchWarning(UserWarning):
    """Input that was accepted after a repair the user should know about (the CLI prints one line)."""


class StoreError(AlignbenchError):
    """The results store cannot be opened, migrated or written."""


class ModelError(AlignbenchError):
    """Unknown model, incompatible recipe, checkpoint mismatch, weights that cannot be had."""


class WeightsUnavailableError(ModelError):
    """Weights must be downloaded but the network or the file is not there."""


class DatasetError(AlignbenchError):
    """A dataset cannot be read: missing files, corrupt records, mismatched maps."""


class ExplainerError(AlignbenchError):
    """An explainer that does not exist or does not apply to the model, a bad target."""


class MetricError(AlignbenchError):
    """An unknown metric, or one the dataset cannot feed (e.g. boxes missing)."""


class NotImplementedYet(AlignbenchError):
    """A command or option that is planned but not built: never a fake result."""

    exit_code = 2


class TrainingError(AlignbenchError):
    """A training run that cannot start or continue: bad data, an unwritable --out, a --resume
    checkpoint of another model or recipe, a teacher with another label space."""
