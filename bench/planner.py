"""Shard count vs wall time: a simulated cluster run for prefix widths 1-4, and the planner's pick.

    .venv/bin/python bench/planner.py [--images 330000] [--concurrency 35] [--submit-rate 50]

N sha256-named keys are planned with the real ``steps.planning.prefixes.plan_layout`` at each forced width
(so shard sizes are the real, slightly uneven ones). Each shard is one task: it is submitted at
``--submit-rate`` jobs/s (AWS Batch SubmitJob ≈ 50 TPS per account), waits for one of
``--concurrency`` slots, pays ``--start-s`` of start-up (instance/container/Python start, ~60 s
on Batch), then processes its images at ``--task-rate`` images/s. The defaults are the seed run:
140 vCPUs as 35 tasks of 4 vCPUs at ≈ 4.3 images/s per vCPU (network bound, ≈ 17/s per task).
Billed task-hours include every task's start-up: that overhead is what many small shards cost.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
from dataclasses import dataclass

from common import print_machine_info, print_table

from steps.planning.prefixes import MAX_WIDTH, PrefixCounts, cell_of, plan_layout


@dataclass(frozen=True)
class Simulated:
    width: int
    shards: int
    mean_images: float
    max_images: int
    submit_s: float
    wall_s: float
    task_s: float  # sum of task durations, start-up included (what is billed)
    startup_share: float


def simulate(sizes: list[int], args: argparse.Namespace) -> tuple[float, float, float]:
    """(submission seconds, wall seconds, billed task-seconds) for tasks of ``sizes`` images."""
    slots = [0.0] * args.concurrency  # when each slot is next free
    wall = billed = 0.0
    for index, size in enumerate(sizes):
        submitted = index / args.submit_rate
        start = max(submitted, heapq.heappop(slots))
        duration = args.start_s + size / args.task_rate
        heapq.heappush(slots, start + duration)
        wall, billed = max(wall, start + duration), billed + duration
    return len(sizes) / args.submit_rate, wall, billed


def clock(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=330_000, help="images in the run (default 330,000)")
    parser.add_argument("--concurrency", type=int, default=35, help="tasks running at once (default 35)")
    parser.add_argument("--submit-rate", type=float, default=50.0, help="jobs submitted per second (default 50)")
    parser.add_argument("--start-s", type=float, default=60.0, help="start-up seconds per task (default 60)")
    parser.add_argument("--task-rate", type=float, default=17.0, help="images/s of one task (default 17)")
    parser.add_argument("--shard-size", type=int, default=1500, help="planner target (PreprocessFlow default)")
    parser.add_argument("--max-shards", type=int, default=100, help="planner limit (PreprocessFlow default)")
    args = parser.parse_args(argv)

    print_machine_info("bench/planner.py: simulated wall time vs shard prefix width")
    counts = PrefixCounts()
    for i in range(args.images):
        counts.add(cell_of(f"{hashlib.sha256(str(i).encode()).hexdigest()}.jpg"))
    print(
        f"model:    {args.images:,} images, {args.concurrency} concurrent tasks, {args.submit_rate:g} submits/s, "
        f"{args.start_s:g} s start-up per task, {args.task_rate:g} images/s per task"
    )
    results = []
    for width in range(1, MAX_WIDTH + 1):
        sizes = [r.images for r in plan_layout(counts, args.shard_size, max_shards=16**width, width=width).ranges]
        submit, wall, billed = simulate(sizes, args)
        results.append(
            Simulated(
                width,
                len(sizes),
                args.images / len(sizes),
                max(sizes),
                submit,
                wall,
                billed,
                len(sizes) * args.start_s / billed,
            )
        )
    print_table(
        [
            "width",
            "shards",
            "images/shard",
            "largest",
            "task minutes",
            "submitting",
            "wall (h:mm:ss)",
            "task-hours billed",
            "start-up share",
        ],
        [
            (
                r.width,
                r.shards,
                round(r.mean_images),
                r.max_images,
                r.task_s / r.shards / 60,
                clock(r.submit_s),
                clock(r.wall_s),
                r.task_s / 3600,
                f"{r.startup_share:.0%}",
            )
            for r in results
        ],
    )
    fastest = min(results, key=lambda r: r.wall_s)
    picks = []
    for max_shards in sorted({args.max_shards, 16**MAX_WIDTH}):
        plan = plan_layout(counts, args.shard_size, max_shards=max_shards)
        _, wall, billed = simulate([r.images for r in plan.ranges], args)
        print(
            f"planner:  --shard-size {args.shard_size} --max-shards {max_shards}: {plan.reason} "
            f"({len(plan.ranges)} shards; simulated wall {clock(wall)}, {billed / 3600:.1f} task-hours)"
        )
        picks.append(f"{len(plan.ranges)} shards (width {plan.width}) at --max-shards {max_shards}")
    print(
        f"ratio: wall time width 4 / width 2 = {results[3].wall_s / results[1].wall_s:.0f}x, width 3 / width 2 = "
        f"{results[2].wall_s / results[1].wall_s:.1f}x; fastest simulated: width {fastest.width}; planner picks "
        + ", ".join(picks)
    )


if __name__ == "__main__":
    main()
