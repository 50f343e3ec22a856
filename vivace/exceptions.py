"""Errors raised by vivace.

Every error a user can meet derives from :class:`VivaceError`::

    VivaceError
    ├── ConfigurationError          bad decorator option, bad runner or setting value
    ├── ParameterValidationError    a flow parameter does not match its type hint
    ├── UpstreamTaskError           a task did not run because an upstream failed
    ├── TaskTimeoutError            a task or flow ran past its timeout_seconds
    ├── CrashedRunError             a run was ended by an interrupt or a dead worker
    ├── UnpicklableError            a task, argument or result could not be pickled
    ├── MissingExtraError           a runner needs an optional extra that is not installed
    ├── MissingContextError         get_run_logger() outside a flow or task
    └── StoreError                  the run-history database
        └── StoreUnavailableError   the database URL cannot be reached or used

Control-flow signals are not errors and do not derive from VivaceError.
"""

from __future__ import annotations


class VivaceError(Exception):
    """Root of every vivace error."""


class ConfigurationError(VivaceError, ValueError):
    """An option, decorator argument or setting was given a value it cannot take."""


class ParameterValidationError(VivaceError, ValueError):
    """A flow was called with a parameter that does not match its type hint."""


class UpstreamTaskError(VivaceError):
    """A task did not run because a task it depends on did not complete."""


class TaskTimeoutError(VivaceError, TimeoutError):
    """A task or flow ran longer than its ``timeout_seconds``."""


class CrashedRunError(VivaceError):
    """A run ended because its process was interrupted or its worker died."""


class UnpicklableError(VivaceError, TypeError):
    """A task, argument or result could not be pickled where it must travel."""


class MissingExtraError(VivaceError, ImportError):
    """A feature needs an optional extra: ``pip install 'vivace[dask]'``, ``'vivace[ray]'``."""


class MissingContextError(VivaceError, RuntimeError):
    """A run-scoped helper was used outside of a flow or task run."""


class StoreError(VivaceError):
    """The run-history database failed."""


class StoreUnavailableError(StoreError):
    """The run-history database cannot be reached or opened."""
