"""A gang's input: each node decodes only its slice, and the nodes agree on what they hold.

With ``--nodes K`` node k loads slice k of K (``steps.training.data.load_dataset``): every K-th key
of labels.csv's sorted keys from the k-th on, or every K-th complete WebDataset tar. Nothing is
shared through any process's memory across nodes. Before its ranks start, each node's task
publishes through the gang's store (``NodeWatch.exchange``) what its slice holds, and every node
derives the same facts from the K reports:

- the classes: the sorted union of every node's labels (a slice may miss a class), so every node
  builds the same head and numbers the classes alike;
- an epoch: as many global batches as the node with the fewest training images fills with its
  part of each batch (``determinism.node_parts``); the split is a pure function of (seed, key), so
  every node counts its own training images (``steps.training.sampling.NodeSampler``);
- the totals that events and the summary report: images, training and validation images, rejects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from steps.errors import ConfigError
from steps.training.config import TrainConfig
from steps.training.data import Dataset, GangSlice
from steps.training.determinism import key_split, node_parts
from steps.training.nodes import NodeWatch


@dataclass(frozen=True)
class NodeInput:
    """What one node's slice holds, as the node publishes it."""

    classes: list[str]
    images: int  # readable, labelled
    train: int
    val: int
    read: int  # objects read: images, or tars of a WebDataset input
    listed: int  # objects in the whole input
    unit: str
    bytes: int
    rejects: list[dict[str, str]]

    def line(self, node: int, nodes: int) -> str:
        """The node's log line: what it read of the input."""
        images = f": {self.images} images" if self.unit != "images" else ""
        return (
            f"node {node} of {nodes}: read {self.read} of {self.listed} {self.unit} "
            f"(its slice, {self.bytes / 1e6:.1f} MB){images}"
        )


def node_input(data: Dataset, cfg: TrainConfig) -> NodeInput:
    train, val = key_split(data.keys, cfg.val_fraction, cfg.seed)
    return NodeInput(
        classes=data.class_names,
        images=len(data.keys),
        train=len(train),
        val=len(val),
        read=data.read.objects,
        listed=data.read.listed,
        unit=data.read.unit,
        bytes=data.read.bytes,
        rejects=data.rejects,
    )


def join_gang(watch: NodeWatch, data: Dataset, cfg: TrainConfig) -> tuple[Dataset, list[NodeInput]]:
    """This node's slice with the gang's classes and epoch (``Dataset.gang``), and every node's report."""
    gang = watch.gang
    inputs = [NodeInput(**report) for report in watch.exchange("inputs", asdict(node_input(data, cfg)))]
    classes = sorted(set().union(*(node.classes for node in inputs)))
    if len(classes) < 2:
        raise ConfigError(
            f"readable images in {cfg.input_uri}", classes, "images of at least two classes", "fix or relabel them"
        )
    parts = node_parts(cfg.batch_size, gang.num_nodes)
    fills = [node.train // part for node, part in zip(inputs, parts, strict=True)]
    if min(fills) == 0:
        short = fills.index(0)
        raise ConfigError(
            "--nodes",
            gang.num_nodes,
            f"at least {parts[short]} training images in every node's slice (its part of each global batch)",
            f"node {short} has {inputs[short].train}; pass fewer --nodes or a smaller --batch-size",
        )
    renumber = torch.tensor([classes.index(name) for name in data.class_names], dtype=torch.int64)
    agreed = GangSlice(
        gang.node_index,
        gang.num_nodes,
        per_epoch=min(fills),
        train_images=sum(node.train for node in inputs),
        val_images=sum(node.val for node in inputs),
    )
    return replace(data, class_names=classes, targets=renumber[data.targets], gang=agreed), inputs
