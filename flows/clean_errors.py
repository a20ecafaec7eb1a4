"""Configuration errors as one clean line: ``steps`` raises its metaflow-free ConfigError, and
``start`` turns it into a Metaflow exception with a headline, which Metaflow prints without a
traceback. ``start`` carries no ``@retry``, so a bad value costs one attempt and the run exits
non-zero before any fan-out.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from metaflow.exception import MetaflowException

from steps.errors import ConfigError


class InvalidConfiguration(MetaflowException):
    headline = "Invalid configuration"


@contextmanager
def configuration_checked() -> Iterator[None]:
    try:
        yield
    except ConfigError as error:
        raise InvalidConfiguration(str(error)) from None
