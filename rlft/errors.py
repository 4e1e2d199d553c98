"""The project's error types, in one place. Every message is one line a user can act on.

The ``rlft`` command prints ``rlft: error: <message>`` and exits with the error's ``exit_code``:
2 for a configuration or argument the user can change, 1 for data, checkpoints or exports that
cannot be used as they are. :class:`StopRequested` (a graceful stop with a checkpoint) exits 130.
"""

from __future__ import annotations


class RlftError(Exception):
    """Base of rlft's own errors; ``exit_code`` is what the ``rlft`` command exits with."""

    exit_code = 1


class ConfigError(RlftError, ValueError):
    """A configuration problem that the user can fix (unknown key, bad value, wrong algorithm)."""

    exit_code = 2


class DatasetError(RlftError, ValueError):
    """A dataset that cannot be used as it is; the message names the file and the problem."""


class CheckpointError(RlftError, ValueError):
    """A checkpoint or run folder that does not fit what loads it; the message says which weights or files."""


class ExportError(RlftError, RuntimeError):
    """An export that cannot be trusted (the exported graph disagrees with PyTorch)."""


class ActionError(RlftError, ValueError):
    """Actions a batched env cannot apply: the wrong shape, or NaN / inf values."""


class NonFiniteActionError(ActionError):
    """Actions holding NaN or inf: during training, a sign that the policy diverged."""


class DivergedError(RlftError):
    """Training produced a non-finite loss, gradient or weight; nothing was saved after the last good checkpoint."""


class StopRequested(KeyboardInterrupt):
    """A training loop stopped on SIGTERM or a first Ctrl-C, after writing a checkpoint at its next logging step."""
