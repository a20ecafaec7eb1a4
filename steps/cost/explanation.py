"""Why the ranking's winner won: the option it is best compared with, and one sentence naming the
cost terms (compute, egress, interruption risk) that decided it (``steps.cost.model``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from steps.report import gigabytes, usd

if TYPE_CHECKING:
    from steps.cost.model import RegionQuote

# Cost differences under half a cent, or under 1% of the rival's total for a job of cents, are not
# worth a word in the explanation.
_CENT = 0.005
_NOTABLE = 0.01


def rival(quotes: Sequence[RegionQuote], home: str | None) -> RegionQuote | None:
    """What the winner is best compared with: the best option where the data is, when the winner
    moved away from it; otherwise the price-only pick (lowest spot $/h); otherwise the runner-up."""
    best, others = quotes[0], quotes[1:]
    if not others:
        return None
    at_home = [q for q in others if q.region == home]
    if home is not None and best.region != home and at_home:
        return at_home[0]
    cheapest = min(quotes, key=lambda q: (q.spot_price, q.region, q.instance_type))
    return cheapest if cheapest is not best else others[0]


def _amount(q: RegionQuote, dollars: float) -> str:
    """``dollars`` for this run, and per million images when the job counts them."""
    per_million = (
        f" ({usd(dollars / q.total_cost * q.usd_per_million_images)} per M images)"
        if (q.usd_per_million_images and q.total_cost)
        else ""
    )
    return f"{usd(dollars)}{per_million}"


def explain(best: RegionQuote, other: RegionQuote | None, home: str | None) -> str:
    """One sentence: the winner, what it beat and by how much, and which cost terms decided it."""
    where = " where the data is" if best.region == home else ""
    if other is None:
        return f"{best.label}{where}: {_amount(best, best.total_cost)} expected, the only candidate."
    notable = min(_CENT, _NOTABLE * other.total_cost)
    pros, cons = [], []
    prices = f"${best.spot_price:.3f}/h vs ${other.spot_price:.3f}/h"
    d_compute = other.compute_cost - best.compute_cost
    if d_compute > notable:
        cheaper_hour = best.spot_price < other.spot_price
        pros.append(
            f"its spot price is lower ({prices})"
            if cheaper_hour
            else f"it needs fewer instance-hours ({best.instance_hours:.3g} h vs {other.instance_hours:.3g} h)"
        )
    elif d_compute < -notable:
        cons.append(f"a higher spot price ({prices})")
    if other.egress_cost - best.egress_cost > notable:
        pros.append(f"it avoids moving {gigabytes(other.moved_gb)} across regions ({usd(other.egress_cost)})")
    elif best.egress_cost - other.egress_cost > notable:
        cons.append(f"{usd(best.egress_cost)} to move {gigabytes(best.moved_gb)}")
    # Rework follows compute; only a different band is a reason of its own.
    safer = best.interruption_probability < other.interruption_probability
    riskier = best.interruption_probability > other.interruption_probability
    if safer and other.rework_cost - best.rework_cost > notable:
        pros.append(f"its interruption risk is lower ({best.risk} vs {other.risk})")
    elif riskier and best.rework_cost - other.rework_cost > notable:
        cons.append(f"higher interruption risk ({best.risk} vs {other.risk})")
    if pros:
        why = " because " + " and ".join(pros)
    elif best.rank_key[0] == other.rank_key[0]:
        why = " (equal cost: ties go to the region name, then the instance type)"
    else:
        why = " (less than a cent apart)" if other.total_cost >= 1 else f" (within {_NOTABLE:.0%} of each other)"
    despite = ", despite " + " and ".join(cons) if cons else ""
    other_where = " where the data is" if other.region == home else ""
    return (
        f"{best.label}{where}: {_amount(best, best.total_cost)} expected, "
        f"{_amount(best, other.total_cost - best.total_cost)} less than {other.label}{other_where}{why}{despite}."
    )
