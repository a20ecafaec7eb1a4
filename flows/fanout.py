"""What every sharded flow does before its foreach: plan the shards, then choose a region.

The flow steps stay thin; these bodies are shared by PreprocessFlow and InferFlow.
"""

from dataclasses import asdict

from cards import render
from metaflow import Parameter, config_expr

from steps.cost.placement import choose_region
from steps.cost.prices import load_prices
from steps.progress import log
from steps.sharding.planning import prepare_run


def sharding_parameters() -> tuple[Parameter, Parameter, Parameter]:
    """``--prefix-width``, ``--shard-size``, ``--max-shards``: the same in every sharded flow, with
    defaults from that flow's own config (its Config is named ``config``)."""
    return (
        Parameter("prefix-width", type=int, default=0, help="Hex prefix characters per shard; 0 = auto."),
        Parameter(
            "shard-size",
            type=int,
            default=config_expr("config.shard_size"),
            help="Target images per shard (auto width).",
        ),
        Parameter(
            "max-shards",
            type=int,
            default=config_expr("config.max_shards"),
            help="At most this many shards; more prefixes are packed into ranges (match `run --max-num-splits`).",
        ),
    )


def plan_fanout(flow) -> None:
    """Validate locations, plan shards and store ``shard_plan`` (for people) and ``shards``."""
    plan = prepare_run(
        flow.input_uri,
        flow.output_uri,
        shard_size=flow.shard_size,
        max_shards=flow.max_shards,
        prefix_width=flow.prefix_width,
        threads=flow.threads,
    )
    flow.shard_plan = plan.describe()
    # Plain dicts, not ShardRef: the Metaflow UI and notebooks can show them without this package.
    flow.shards = [asdict(ref) for ref in plan.shards]
    log(f"planned {plan.images} images into {len(plan.shards)} shards: {plan.reason}")


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
