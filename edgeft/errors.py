"""One family of user-facing errors.

Every error a user can fix (a bad path, a mismatched checkpoint, a corrupt image) is an
:class:`EdgeftError`. Its message is one line: what was wrong, the value, and what to do. The CLI
prints it without a traceback and exits 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgeftError(Exception):
    """A problem with the user's input or environment, with a message the user can act on."""

    exit_code = 2


class ConfigError(EdgeftError):
    """A configuration value is invalid; the message names the field."""


class DataError(EdgeftError):
    """The data folder, an image or a split is unusable."""


class ModelError(EdgeftError):
    """An architecture name, checkpoint or weights source is unusable."""


class ArtifactError(EdgeftError):
    """An artifact directory is missing, incomplete, or of an unexpected kind."""


class DependencyError(EdgeftError):
    """An optional dependency (onnxruntime, tensorrt, CUDA, ...) is missing; says what to install."""


class TrainingError(EdgeftError):
    """Training cannot continue (for example the loss became NaN)."""


def close_matches(word: str, choices, n: int = 3) -> str:
    """Return ``" (did you mean: a, b?)"`` for the closest of ``choices``, or an empty string."""
    import difflib

    found = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    return f" (did you mean: {', '.join(found)}?)" if found else ""
