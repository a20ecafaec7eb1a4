"""Parameter types that reject a bad value at parse time, before any task runs, with click's own
one line (``Error: Invalid value for '--chunk-size': 0 is not in the range x>=1.``, exit 2).

They must come from Metaflow's vendored click: a plain ``click`` type breaks every command.
"""

from metaflow._vendor import click

from steps.sharding.plan import MAX_WIDTH


class OpenRange(click.ParamType):
    """A float strictly between ``low`` and ``high`` (the vendored click's FloatRange is closed)."""

    name = "float"

    def __init__(self, low: float, high: float | None = None) -> None:
        self.low, self.high = low, high

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if number <= self.low or (self.high is not None and number >= self.high):
            bounds = f"{self.low}<x" + (f"<{self.high}" if self.high is not None else "")
            self.fail(f"{number} is not in the range {bounds}", param, ctx)
        return number


def _named(param_type: click.ParamType, name: str) -> click.ParamType:
    """``argo-workflows create`` describes a parameter's type by its ``__name__`` (as for ``int``)."""
    param_type.__name__ = name
    return param_type


POSITIVE = _named(click.IntRange(min=1), "int")
NON_NEGATIVE = _named(click.IntRange(min=0), "int")
PREFIX_WIDTH = _named(click.IntRange(min=0, max=MAX_WIDTH), "int")  # 0: chosen from the data
POSITIVE_REAL = _named(OpenRange(0), "float")
NON_NEGATIVE_REAL = _named(click.FloatRange(min=0), "float")
FRACTION = _named(OpenRange(0, 1), "float")
