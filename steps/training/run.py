"""The whole training step: load the data, train (resuming if a checkpoint exists), save the bundle.

One rank trains in this process; several run as data-parallel processes (``distributed``), on this
machine or, in a gang of ``nodes`` machines (``steps.training.nodes``), on each of them: every node
loads only its slice of the data (``steps.training.gang_inputs``), node 0 saves the bundle and
reports every node's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steps.io.storage import join_uri, open_storage
from steps.models.bundle import ModelBundle
from steps.output.layout import model_key
from steps.progress import log
from steps.training.checkpoints import CheckpointStore
from steps.training.config import TrainConfig
from steps.training.data import Dataset, load_dataset
from steps.training.distributed import fit_on_ranks, ranks_per_node
from steps.training.events import TrainingCallback, fan_out, log_event
from steps.training.gang_inputs import NodeInput, join_gang
from steps.training.loop import StopSignal, fit
from steps.training.nodes import Gang, NodeWatch


def log_rejects(data: Dataset) -> None:
    if data.rejects:
        first = data.rejects[0]
        log(f"{len(data.rejects)} unreadable images skipped, e.g. {first['key']}: {first['reason']}")


@dataclass
class TrainOutcome:
    model_uri: str
    metrics: dict[str, list[float]]
    confusion: dict[str, Any]
    rejects: list[dict[str, str]]
    summary: dict[str, Any]


def train_run(
    cfg: TrainConfig,
    run_id: str,
    attempt: int,
    *,
    stop: StopSignal | None = None,
    on_event: TrainingCallback | None = None,
    gang: Gang | None = None,
) -> TrainOutcome | None:
    """Load the data, train (resuming if a checkpoint exists), save the model bundle.

    ``on_event`` receives the training events (steps.training.events) in this process, after
    they are logged, whatever the number of ranks. In a gang (``gang``, ``cfg.nodes`` > 1) this
    is one node's part; only node 0 returns the outcome.
    """
    ranks = ranks_per_node(cfg.processes, cfg.batch_size, cfg.nodes)
    store = CheckpointStore(open_storage(cfg.checkpoint_root), run_id, cfg.keep_last)
    events = fan_out(log_event, on_event)
    inputs: list[NodeInput] = []
    if gang is not None and gang.num_nodes > 1:
        log(
            f"node {gang.node_index} of {gang.num_nodes} (main {gang.main_ip}:{gang.port}): ranks "
            f"{gang.node_index * ranks}-{gang.node_index * ranks + ranks - 1} of {gang.num_nodes * ranks}"
        )
        data = load_dataset(cfg.input_uri, cfg.image_size, cfg.threads, gang.node_index, gang.num_nodes)
        log_rejects(data)
        with NodeWatch(gang) as watch:
            data, inputs = join_gang(watch, data, cfg)
            log(inputs[gang.node_index].line(gang.node_index, gang.num_nodes))
            result = fit_on_ranks(cfg, data, run_id, ranks, watch=watch, stop=stop, on_event=events)
        if result is None:
            return None
    else:
        data = load_dataset(cfg.input_uri, cfg.image_size, cfg.threads)
        log_rejects(data)
        log(f"training {cfg.architecture} on {len(data.keys)} images ({len(data.class_names)} classes) to {store.uri}")
        if ranks == 1:
            result = fit(cfg, data, store, stop=stop, on_event=events)
        else:
            result = fit_on_ranks(cfg, data, run_id, ranks, stop=stop, on_event=events)
    # In a gang every node's slice counts: node 0 reports them all.
    rejects = [reject for node in inputs for reject in node.rejects] if inputs else data.rejects
    images = sum(node.images for node in inputs) if inputs else len(data.keys)
    output = open_storage(cfg.output_uri)
    accuracy = result.history["val_accuracy"][-1]
    ModelBundle(
        architecture=cfg.architecture,
        class_names=data.class_names,
        input_size=cfg.image_size,
        state_dict=result.state_dict,
        extra={
            "flow": "TrainFlow",
            "run_id": run_id,
            "val_accuracy": f"{accuracy:.4f}",
            "resize": "center-crop square",
        },
    ).save(output, model_key(run_id))
    model_uri = join_uri(output.uri, model_key(run_id))
    summary = {
        "architecture": cfg.architecture,
        "images": images,
        "rejected": len(rejects),
        "classes": len(data.class_names),
        "epochs": cfg.epochs,
        "train_loss": round(result.history["train_loss"][-1], 4),
        "val_accuracy": round(accuracy, 4),
        "chance_accuracy": round(1 / len(data.class_names), 4),
        "device": result.device,
        "world_size": result.world_size,
        "nodes": cfg.nodes,
        "seconds": round(result.seconds, 2),
        "attempt": attempt,
        "resumed_from": result.resumed_from,
        "last_checkpoint": result.last_checkpoint,
        "checkpoints_written": result.checkpoints_written,
        "model_uri": model_uri,
    }
    if inputs:
        summary["read_per_node"] = [
            {"read": node.read, "listed": node.listed, "unit": node.unit, "bytes": node.bytes} for node in inputs
        ]
    return TrainOutcome(
        model_uri=model_uri,
        metrics=result.history,
        confusion={"class_names": data.class_names, "matrix": result.confusion},
        rejects=rejects,
        summary=summary,
    )
