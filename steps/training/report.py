"""TrainFlow's headline and report card."""

from __future__ import annotations

from typing import Any

from steps.cost.prices import PriceBook, parse_snapshot, read_snapshot
from steps.report import Chart, Report, Table, human, usd


def headline(summary: dict[str, Any]) -> str:
    resumed = f"; resumed from {summary['resumed_from']}" if summary["resumed_from"] else ""
    rejected = f" ({summary['rejected']} unreadable skipped)" if summary["rejected"] else ""
    return (
        f"Trained {summary['architecture']} on {summary['images']} images{rejected}, {summary['classes']} classes, "
        f"{summary['epochs']} epochs on {summary['device']} in {summary['seconds']:.1f} s: val accuracy "
        f"{summary['val_accuracy']:.3f} (chance {summary['chance_accuracy']:.3f}), "
        f"train loss {summary['train_loss']:.4f}"
        f"{resumed}. Model: {summary['model_uri']}"
    )


def curves_spec(history: dict[str, list[float]]) -> dict:
    """Vega-Lite: train loss and validation accuracy per epoch, each on its own axis."""
    rows = [
        {"epoch": epoch, "metric": metric.replace("_", " "), "value": value}
        for metric, values in history.items()
        for epoch, value in enumerate(values, start=1)
    ]

    def line(metric: str, color: str, domain: list[float] | None = None) -> dict:
        scale = {"domain": domain} if domain else {"zero": False}
        return {
            "transform": [{"filter": {"field": "metric", "equal": metric}}],
            "mark": {"type": "line", "point": True, "color": color},
            "encoding": {
                "x": {"field": "epoch", "type": "quantitative", "axis": {"tickMinStep": 1}},
                "y": {"field": "value", "type": "quantitative", "title": metric, "scale": scale},
            },
        }

    return {
        "data": {"values": rows},
        "layer": [line("train loss", "#d8573b"), line("val accuracy", "#3b7dd8", [0, 1])],
        "resolve": {"scale": {"y": "independent"}},
        "height": 220,
    }


def cost_table(summary: dict[str, Any], prices: PriceBook) -> Table:
    """Images/s, GPU-hours and dollars of the training task; dollars only for GPU time (a laptop's
    CPU seconds are not billed). One instance: the cheapest 1-GPU spot price of the snapshot. A gang
    of K nodes: K instances for the whole time, each the cheapest type with the node's GPUs, at its
    On-Demand price (AWS Batch runs multi-node jobs on On-Demand capacity only)."""
    hours = summary["seconds"] / 3600
    nodes = int(summary.get("nodes", 1))
    on_gpu = str(summary["device"]).startswith("cuda")
    gpu_hours = hours * (summary["world_size"] if nodes > 1 else 1) if on_gpu else 0.0
    if on_gpu and nodes > 1:
        per_node = summary["world_size"] // nodes
        fits = [q for q in prices.quotes if q.gpus >= per_node]
        # Without a type of that many GPUs in the snapshot: that many 1-GPU prices per node.
        quote = min(fits or [q for q in prices.quotes if q.gpus == 1], key=lambda q: (q.on_demand, q.region))
        per_instance = quote.on_demand * (1 if fits else per_node)
        dollars = usd(nodes * hours * per_instance)
        shape = (
            f"{quote.instance_type}" if fits else f"{per_node} × {quote.instance_type} (no {per_node}-GPU type priced)"
        )
        basis = (
            f"{nodes} instances × {human(hours)} h × ${per_instance:.4g}/h On-Demand {shape} in {quote.region}: "
            "Batch runs a gang on On-Demand only"
        )
    elif on_gpu:
        cheapest = min((q for q in prices.quotes if q.gpus == 1), key=lambda q: (q.spot, q.region, q.instance_type))
        dollars = usd(hours * cheapest.spot)
        basis = f"{human(hours)} GPU-hours × ${cheapest.spot:.4g}/h spot {cheapest.instance_type} in {cheapest.region}"
    else:
        dollars, basis = "–", f"trained on {summary['device']}: no GPU time to bill"
    return Table(
        "Throughput and cost",
        ["item", "value"],
        [
            ["throughput (images/s, all epochs)", human(summary["images"] * summary["epochs"] / summary["seconds"])],
            ["instances", nodes],
            ["task-hours (h)", human(hours * nodes)],
            ["GPU-hours (h)", human(gpu_hours)],
            ["cost ($)", dollars],
            ["cost basis", basis],
        ],
    )


def build_report(
    summary: dict[str, Any],
    metrics: dict[str, list[float]],
    confusion: dict[str, Any],
    rejects: list[dict[str, str]],
    prices: PriceBook | None = None,
) -> Report:
    names = confusion["class_names"]
    return Report(
        title="TrainFlow",
        headline=headline(summary),
        sections=[
            Chart("Loss and accuracy per epoch", curves_spec(metrics)),
            Table(
                "Per-epoch metrics",
                ["epoch", "train loss", "val accuracy"],
                [
                    [i + 1, f"{loss:.4f}", f"{acc:.3f}"]
                    for i, (loss, acc) in enumerate(zip(metrics["train_loss"], metrics["val_accuracy"], strict=True))
                ],
            ),
            Table(
                "Confusion (validation; rows = true, columns = predicted)",
                ["true \\ predicted", *names],
                [[name, *row] for name, row in zip(names, confusion["matrix"], strict=True)],
            ),
            Table("Rejected inputs", ["key", "reason"], [[r["key"], r["reason"]] for r in rejects]),
            cost_table(summary, prices or parse_snapshot(read_snapshot())),
            Table("Run", ["item", "value"], [[k, human(v)] for k, v in summary.items()]),
        ],
    )
