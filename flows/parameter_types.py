"""Parameter types that reject a bad value at parse time, before any task runs, with click's own
one line (``Error: Invalid value for '--chunk-size': 0 is not in the range x>=1.``, exit 2).

They must come from Metaflow's vendored click: a plain ``click`` type breaks every command.
"""

from metaflow._vendor import click

from steps.sharding.plan import MAX_WIDTH

POSITIVE = click.IntRange(min=1)
PREFIX_WIDTH = click.IntRange(min=0, max=MAX_WIDTH)  # 0: chosen from the data
POSITIVE_REAL = click.FloatRange(min=0, min_open=True)
NON_NEGATIVE_REAL = click.FloatRange(min=0)
FRACTION = click.FloatRange(min=0, max=1, min_open=True, max_open=True)
