"""``spot-batch``: the project's one command line, for everything that is not a flow run.

    spot-batch sample-data DIR [--count 240] [--seed 0]
    spot-batch verify OUTPUT --input INPUT [--manifest URI] [--input-format auto|images|webdataset]
    spot-batch predictions OUTPUT [--labels INPUT]
    spot-batch similar OUTPUT --key K [--k 10]
    spot-batch regions rank --instance-types g4dn.xlarge,g5.xlarge --task-hours 2 [--cpu 4 --gpu 1] [--data-region ...]
    spot-batch plan INPUT OUTPUT [--flow preprocess|infer] [--manifest URI] [--input-format F] [--json]

``python -m steps`` is the same command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from steps.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _sample_data(args: argparse.Namespace) -> int:
    from steps.demo.sample_data import generate
    from steps.output.layout import LABELS_FILE

    written = generate(args.directory, args.count, args.seed)
    bad = sum(1 for s in written if s.label is None)
    print(f"wrote {len(written) - bad} images and {bad} bad files to {args.directory} (labels in {LABELS_FILE})")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from steps.verify import verify

    result = verify(args.output, args.input, args.manifest, args.input_format)
    for problem in result.problems:
        print(problem)
    print(result.verdict(args.output))
    return 0 if result.ok else 1


def _predictions(args: argparse.Namespace) -> int:
    from steps.inference.predictions import describe, load_labels, load_table
    from steps.io.storage import open_storage

    labels = load_labels(open_storage(args.labels)) if args.labels else None
    table = load_table(args.output)
    predictions = table.to_pandas().sort_values("key", kind="stable").reset_index(drop=True)
    print(describe(predictions, labels, table.schema))
    return 0


def _similar(args: argparse.Namespace) -> int:
    from steps.inference.similar import similar

    for rank, neighbour in enumerate(similar(args.output, args.key, args.k, args.column), start=1):
        print(f"{rank:>3}  {neighbour.cosine:.4f}  {neighbour.key}")
    return 0


def _regions_rank(args: argparse.Namespace) -> int:
    from steps.cost.model import Job, format_ranking, rank
    from steps.cost.prices import load_prices, parse_snapshot, read_snapshot
    from steps.cost.resources import StepResources

    if len(args.data_region) != len(args.data_gb):
        raise ConfigError(
            "--data-gb", args.data_gb, f"one value per --data-region {args.data_region}", "pass them in the same order"
        )
    wanted = set(args.instance_types)
    known = wanted <= set(parse_snapshot(read_snapshot()).instance_types)  # else rank names the closest
    book = load_prices(
        read_snapshot(),
        live=not args.snapshot_only,
        endpoint_url=args.endpoint_url,
        keep=(lambda q: q.instance_type in wanted) if known else None,
    )
    data_gb = dict(zip(args.data_region, args.data_gb, strict=True))
    job = Job(
        data_gb,
        dict.fromkeys(args.instance_types, args.task_hours),
        StepResources(args.cpu, args.gpu, args.memory),
        args.tasks,
        args.checkpoint_minutes,
        args.images,
    )
    ranking = rank(book, job, args.regions)
    if args.json:
        print(json.dumps(ranking.rows(), indent=2))
        print(f"{ranking.explanation}\n{ranking.prices}", file=sys.stderr)
    else:
        print(format_ranking(ranking))
    return 0


def _plan(args: argparse.Namespace) -> int:
    from steps.planning.preview import PlanSettings, format_facts, plan_facts, preview

    settings = PlanSettings(
        args.flow,
        args.manifest,
        args.shard_size,
        args.task_minutes,
        args.max_shards,
        args.prefix_width,
        args.threads,
        args.input_format,
    )
    facts = plan_facts(*preview(args.input, args.output, settings))
    print(json.dumps(facts, indent=2) if args.json else format_facts(facts))
    return 0


def _inference_commands(commands: argparse._SubParsersAction) -> None:
    """``predictions`` and ``similar``: reading what InferFlow wrote."""
    cmd = commands.add_parser("predictions", help="summarise the predictions InferFlow wrote")
    cmd.add_argument("output", help="InferFlow --output (directory or s3://bucket/prefix)")
    cmd.add_argument("--labels", help="input root holding labels.csv, to print accuracy")
    cmd.set_defaults(handler=_predictions)

    cmd = commands.add_parser(
        "similar", help="exact nearest neighbours of one image by cosine (an InferFlow --task embed output)"
    )
    cmd.add_argument("output", help="InferFlow --output (directory or s3://bucket/prefix)")
    cmd.add_argument("--key", required=True, help="the input key whose neighbours to list")
    cmd.add_argument("--k", type=int, default=10, help="neighbours to list (default 10)")
    cmd.add_argument("--column", default="embedding", help="the [N, D] output column to compare (default embedding)")
    cmd.set_defaults(handler=_similar)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="spot-batch", description=__doc__.split("\n\n")[0])
    commands = root.add_subparsers(dest="command", required=True)

    cmd = commands.add_parser("sample-data", help="write sample photos (and bad files) named by their sha256")
    cmd.add_argument("directory", type=Path)
    cmd.add_argument("--count", type=int, default=240, help="number of good JPEGs (default 240)")
    cmd.add_argument("--seed", type=int, default=0)
    cmd.set_defaults(handler=_sample_data)

    cmd = commands.add_parser("verify", help="check an output holds every input key exactly once (exit 1 if not)")
    cmd.add_argument("output", help="the --output of a PreprocessFlow or InferFlow run")
    cmd.add_argument("--input", required=True, help="the --input of that run")
    cmd.add_argument("--manifest", default="", help="the --manifest of that run, if any: its keys are the inputs")
    cmd.add_argument("--input-format", default="auto", help="the --input-format of that run (auto, images, webdataset)")
    cmd.set_defaults(handler=_verify)

    _inference_commands(commands)

    regions = commands.add_parser("regions", help="price regions x instance types").add_subparsers(
        dest="regions_command", required=True
    )
    cmd = regions.add_parser("rank", help="rank regions x instance types by expected cost")
    cmd.add_argument("--instance-types", type=_csv, required=True, help="comma-separated, e.g. g4dn.xlarge,g5.xlarge")
    cmd.add_argument("--data-region", type=_csv, default=[], help="region(s) holding the input, comma-separated")
    cmd.add_argument(
        "--data-gb", type=lambda s: [float(x) for x in _csv(s)], default=[], help="GB in each --data-region, same order"
    )
    cmd.add_argument("--task-hours", type=float, required=True, help="estimated total task-hours of the step")
    cmd.add_argument("--tasks", type=int, default=1, help="tasks working in parallel (default 1)")
    cmd.add_argument("--cpu", type=int, default=4, help="vCPUs one task asks for (default 4)")
    cmd.add_argument("--gpu", type=int, default=1, help="GPUs one task asks for; 0 = a CPU step (default 1)")
    cmd.add_argument("--memory", type=int, default=0, help="MB one task asks for (default: not checked)")
    cmd.add_argument("--images", type=int, default=0, help="images the step processes, for $ per million images")
    cmd.add_argument("--checkpoint-minutes", type=float, default=10.0, help="work lost per interruption (default 10)")
    cmd.add_argument("--regions", type=_csv, default=None, help="candidate regions (default: all priced)")
    cmd.add_argument("--snapshot-only", action="store_true", help="skip live EC2 prices, use config/prices.toml")
    cmd.add_argument("--endpoint-url", default=None, help="EC2 endpoint for live prices (e.g. a local fake)")
    cmd.add_argument("--json", action="store_true", help="print the ranked rows as JSON (explanation on stderr)")
    cmd.set_defaults(handler=_regions_rank)

    cmd = commands.add_parser(
        "plan", help="print the shards a PreprocessFlow/InferFlow run would plan, writing nothing anywhere"
    )
    cmd.add_argument("input", help="the run's --input (directory or s3://bucket/prefix)")
    cmd.add_argument("output", help="the run's --output: an earlier run's layout there is kept, as in start")
    cmd.add_argument("--flow", choices=["preprocess", "infer"], default="preprocess", help="whose defaults and cost")
    cmd.add_argument("--manifest", default="", help="S3 Inventory manifest.json or key list naming the input keys")
    cmd.add_argument("--shard-size", type=int, default=None, help="images per shard; 0 = from --task-minutes")
    cmd.add_argument("--task-minutes", type=float, default=None, help="target minutes of work per shard task")
    cmd.add_argument("--max-shards", type=int, default=None, help="fan-out limit (match `run --max-num-splits`)")
    cmd.add_argument("--prefix-width", type=int, default=0, help="hex prefix characters per shard; 0 = auto")
    cmd.add_argument("--threads", type=int, default=None, help="listing threads (default: the flow's --threads)")
    cmd.add_argument("--input-format", default="auto", help="auto, images or webdataset (*.tar shards)")
    cmd.add_argument("--json", action="store_true", help="print the plan as JSON")
    cmd.set_defaults(handler=_plan)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as error:
        print(f"spot-batch: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
