"""Error types shared by every core and stage.

Each message is one line that says what happened and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "SerStreamError",
    "InputError",
    "ModelError",
    "OutputClosed",
    "WireError",
    "SupervisionError",
]


class SerStreamError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(SerStreamError, ValueError):
    """Audio or arguments that cannot be processed (corrupt file, NaN samples, wrong rate)."""


class ModelError(SerStreamError):
    """A model artifact that is missing, incomplete or inconsistent."""


class WireError(SerStreamError):
    """A message that does not follow the wire schema."""


class SupervisionError(SerStreamError):
    """The supervisor gave up on the pipeline: a stage kept failing, or never came up.

    Not the input's fault: the stage's own log lines say what broke.
    """


class OutputClosed(SerStreamError):
    """The reader of the output went away (``ser-stream up | head``): end quietly."""
