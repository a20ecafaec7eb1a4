"""Parameter types that reject a bad value at parse time, before any task runs, with click's own
one line (``Error: Invalid value for '--chunk-size': 0 is smaller than the minimum valid value 1.``).

They must come from Metaflow's vendored click (a plain ``click`` type breaks every command), and
each is an instance of click's plain int/float type with a bounded ``convert``: Metaflow's Runner
API maps a parameter to a Python type by the exact class of its click type, and
``argo-workflows create`` describes it by ``__name__``, so ranged classes (``IntRange``) break both.
"""

from collections.abc import Callable

from metaflow._vendor import click

from steps.planning.prefixes import MAX_WIDTH


def _bounded(base: click.ParamType, name: str, problem: Callable[[float], str]) -> click.ParamType:
    """``base`` whose conversion fails with ``problem(value)`` when that is not empty."""
    convert = base.convert

    def checked(value, param, ctx):
        number = convert(value, param, ctx)
        reason = problem(number)
        if reason:
            base.fail(f"{number} {reason}", param, ctx)
        return number

    base.convert = checked
    base.__name__ = name
    return base


def _at_least(low: int) -> Callable[[float], str]:
    return lambda n: f"is smaller than the minimum valid value {low}" if n < low else ""


POSITIVE = _bounded(click.types.IntParamType(), "int", _at_least(1))
NON_NEGATIVE = _bounded(click.types.IntParamType(), "int", _at_least(0))
PREFIX_WIDTH = _bounded(  # 0: chosen from the data
    click.types.IntParamType(),
    "int",
    lambda n: "" if 0 <= n <= MAX_WIDTH else f"is not in the valid range of 0 to {MAX_WIDTH}",
)
POSITIVE_REAL = _bounded(click.types.FloatParamType(), "float", lambda n: "" if n > 0 else "is not in the range 0<x")
NON_NEGATIVE_REAL = _bounded(click.types.FloatParamType(), "float", _at_least(0))
FRACTION = _bounded(click.types.FloatParamType(), "float", lambda n: "" if 0 < n < 1 else "is not in the range 0<x<1")
