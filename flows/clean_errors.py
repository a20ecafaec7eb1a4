"""Errors of the run's settings as one clean line: ``steps`` raises its metaflow-free ConfigError
(bad configuration) or LeaseConflict (another run writes the output), and ``start`` turns it into a
Metaflow exception with a headline, which Metaflow prints without a traceback. ``start`` carries no
``@retry``, so either costs one attempt and the run exits non-zero before any fan-out.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from metaflow.exception import MetaflowException

from steps.errors import ConfigError, LeaseConflict


class InvalidConfiguration(MetaflowException):
    headline = "Invalid configuration"


class OutputInUse(MetaflowException):
    headline = "Output in use"


@contextmanager
def configuration_checked() -> Iterator[None]:
    try:
        yield
    except ConfigError as error:
        raise InvalidConfiguration(str(error)) from None
    except LeaseConflict as error:
        raise OutputInUse(str(error)) from None
