"""The body of every flow's ``select_region`` step: rank regions, record and show the choice."""

from cards import render

from steps.prices import load_prices
from steps.progress import log
from steps.regions import choose_region


def record_region_choice(flow) -> None:
    """Store ``region_table``, ``region``, ``instance_type``, ``batch_queue`` and ``spot_price`` ($/h)."""
    choice = choose_region(
        {flow.input_uri: flow.shard_plan["input_bytes"]},
        flow.shard_plan["images"],
        regions_config=flow.regions,
        prices=load_prices(flow.prices),
    )
    flow.region_table = choice.region_table
    flow.region, flow.instance_type, flow.batch_queue = choice.region, choice.instance_type, choice.batch_queue
    flow.spot_price = choice.region_table[0]["spot_price"]
    log(choice.explanation)
    render(choice.report())
