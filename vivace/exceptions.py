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
    ├── ResultError                 a persisted result cannot be read (never persisted, or gone)
    ├── ResumeError                 a flow run cannot be retried (not failed, cannot be reloaded)
    ├── BlockError                  a stored block cannot be saved, loaded or used
    │   ├── BlockNotFoundError      no block is saved under that name
    │   ├── BlockExistsError        save() of a taken name without overwrite=True
    │   ├── BlockTypeError          the stored block type cannot be imported or is another one
    │   ├── SecretDecryptionError   secrets were encrypted with another encryption key
    │   ├── BlockPathError          a path escapes a filesystem block's basepath
    │   └── ReadOnlyBlockError      a write to a read-only filesystem block
    ├── DeploymentError             a deployment cannot be made, found or run as asked
    │   └── DeploymentNotFoundError no deployment of that name or id
    │       └── ScheduleNotFoundError  no deployment schedule of that id
    ├── FlowRunStateError           a flow run's state does not allow it (cancel a finished run)
    ├── ConcurrencyLimitError       a concurrency limit cannot grant what is asked (occupy > limit)
    │   ├── ConcurrencyLimitNotFoundError  no concurrency limit of that name
    │   └── ConcurrencySlotTimeoutError    no slot freed within the timeout given
    ├── InfrastructureError         infrastructure cannot be set up, started, watched or stopped
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


class ResultError(VivaceError):
    """A run's persisted result cannot be read: it was never persisted, or its storage lost it."""


class ResumeError(VivaceError):
    """A flow run cannot be retried: it did not fail, or its flow or parameters cannot be loaded."""


class BlockError(VivaceError):
    """A stored block (configuration, secrets, filesystem) cannot be saved, loaded or used."""


class BlockNotFoundError(BlockError, ValueError):
    """No block is saved under the name given."""


class BlockExistsError(BlockError, ValueError):
    """A block was saved under a taken name without ``overwrite=True``."""


class BlockTypeError(BlockError, TypeError):
    """A stored block's type cannot be imported, or is not the Block class it was loaded as."""


class SecretDecryptionError(BlockError):
    """A block's secret fields were encrypted with another key than the one in use now."""


class BlockPathError(BlockError, ValueError):
    """A path given to a filesystem block points outside its basepath."""


class ReadOnlyBlockError(BlockError):
    """A write was asked of a read-only filesystem block (a git repository)."""


class DeploymentError(VivaceError):
    """A deployment cannot be made, found or run as asked."""


class DeploymentNotFoundError(DeploymentError, LookupError):
    """No deployment of that name or id."""


class ScheduleNotFoundError(DeploymentNotFoundError):
    """No deployment schedule of that id (``vivace deployment schedule ls`` lists them)."""


class FlowRunStateError(VivaceError):
    """A flow run is not in a state that allows what was asked (cancel a finished run, ...)."""


class ConcurrencyLimitError(VivaceError):
    """A concurrency limit cannot grant what is asked: more slots than it has, a bad name."""


class ConcurrencyLimitNotFoundError(ConcurrencyLimitError, LookupError):
    """No concurrency limit of the name given (``vivace concurrency-limit create`` makes one)."""


class ConcurrencySlotTimeoutError(ConcurrencyLimitError, TimeoutError):
    """No slot of a concurrency limit freed within the ``timeout`` given."""


class InfrastructureError(VivaceError):
    """Infrastructure cannot be set up, started, watched or stopped as asked."""


class StoreError(VivaceError):
    """The run-history database failed."""


class StoreUnavailableError(StoreError):
    """The run-history database cannot be reached or opened."""
