"""A gang's input without training: each node reads and decodes only its slice of the labelled
set, the nodes agree on classes and epoch length through the gang's store, and every rank trains
a share of its node's part of each global batch that is a pure function of (seed, epoch, layout)."""

from __future__ import annotations

import io
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest
import torch
from PIL import Image

from steps.io.local_storage import LocalStorage
from steps.io.storage import open_storage
from steps.output.layout import edges_key, manifest_key, resized_key
from steps.preprocess.webdataset import WebDatasetPacker
from steps.training import data as data_module
from steps.training.data import Dataset, load_dataset, read_labels
from steps.training.determinism import key_split
from steps.training.gang_inputs import NodeInput, join_gang
from steps.training.nodes import Gang, NodeWatch
from steps.training.sampling import NodeSampler
from steps.training.webdataset_input import samples, webdataset_tars
from tests.unit.training.conftest import TINY_IMAGE, free_port, tiny_config

NODES, RANKS, BATCH = 2, 2, 12


def test_each_node_reads_and_decodes_only_its_slice(
    sample_dir: Path, tiny_data: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[str] = []
    real = data_module.read_input
    monkeypatch.setattr(data_module, "read_input", lambda storage, key: read.append(key) or real(storage, key))
    listed = read_labels(open_storage(str(sample_dir))).keys
    slices = []
    for node in range(NODES):
        read.clear()
        part = load_dataset(str(sample_dir), TINY_IMAGE, 2, node, NODES)
        mine = listed[node::NODES]
        assert sorted(read) == mine, "a node reads its own keys, no other"
        assert (part.read.objects, part.read.listed, part.read.unit) == (len(mine), len(listed), "images")
        assert part.read.bytes == sum((sample_dir / key).stat().st_size for key in mine)
        slices.append(part)
    # Together the slices are the whole set, each image decoded once, as one instance decodes it.
    assert sorted(key for part in slices for key in part.keys) == tiny_data.keys
    whole = dict(zip(tiny_data.keys, tiny_data.images, strict=True))
    assert all(
        torch.equal(image, whole[key]) for part in slices for key, image in zip(part.keys, part.images, strict=True)
    )


def test_a_node_of_a_webdataset_input_reads_whole_tars_of_its_own(tmp_path: Path) -> None:
    keys = [f"{i:02d}.jpg" for i in range(6)]
    target = LocalStorage(tmp_path / "shards")
    for i, key in enumerate(keys):
        jpeg = io.BytesIO()
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(jpeg, "JPEG")
        target.write(resized_key(key), jpeg.getvalue())
        target.write(edges_key(key), b"png")
    labels = {key: "cat" if i % 2 else "dog" for i, key in enumerate(keys)}
    packer = WebDatasetPacker(target, "all", keys, 2, labels, threads=1)
    for chunk in range(3):  # a tar per chunk of 2
        rows = [{"key": k, "status": "ok", "width": 16, "height": 16, "input_bytes": 9} for k in keys[2 * chunk :][:2]]
        packer(pa.Table.from_pylist(rows))
    target.write(manifest_key("all"), b"")
    tars = webdataset_tars(target)
    assert len(tars) == 3
    parts = [load_dataset(str(tmp_path / "shards"), TINY_IMAGE, 1, node, NODES) for node in range(NODES)]
    for node, part in enumerate(parts):
        mine = tars[node::NODES]
        assert (part.read.objects, part.read.listed, part.read.unit) == (len(mine), 3, "tars")
        assert part.read.bytes == sum(len(target.read(tar)) for tar in mine)
        assert part.keys == [meta["key"] for meta, _ in samples(target, images=False, tars=mine)]
    assert sorted(key for part in parts for key in part.keys) == keys


@pytest.fixture(scope="module")
def joined(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Dataset, list[NodeInput]]]:
    """Both nodes' slices after the gang's agreement (node 1 in a thread, as its own task would)."""
    cfg = tiny_config(sample_dir, tmp_path_factory.mktemp("gang"), nodes=NODES, processes=RANKS, batch_size=BATCH)
    port = free_port()
    found: dict[int, tuple[Dataset, list[NodeInput]]] = {}

    def node(index: int) -> None:
        data = load_dataset(str(sample_dir), TINY_IMAGE, 2, index, NODES)
        with NodeWatch(Gang(index, NODES, "127.0.0.1", port)) as watch:
            found[index] = join_gang(watch, data, cfg)
            if index == 0:  # node 0 serves the store: it stays until the other node has read it
                other.join()

    other = threading.Thread(target=node, args=(1,))
    other.start()
    node(0)
    return found


def test_the_nodes_agree_on_classes_split_and_epoch_length(
    joined: dict[int, tuple[Dataset, list[NodeInput]]], tiny_data: Dataset, sample_dir: Path, tmp_path: Path
) -> None:
    (first, reports), (second, same_reports) = joined[0], joined[1]
    assert reports == same_reports and [r.read for r in reports] == [first.read.objects, second.read.objects]
    # Classes: the union of the slices' labels, numbered alike on every node and as on one instance.
    assert first.class_names == second.class_names == tiny_data.class_names
    label = {key: tiny_data.class_names[t] for key, t in zip(tiny_data.keys, tiny_data.targets.tolist(), strict=True)}
    for part in (first, second):
        assert all(part.class_names[t] == label[key] for key, t in zip(part.keys, part.targets.tolist(), strict=True))
    # The split is a pure function of (seed, key): the nodes' splits are the whole set's.
    cfg = tiny_config(sample_dir, tmp_path)
    train, val = key_split(tiny_data.keys, cfg.val_fraction, cfg.seed)
    assert (first.gang.train_images, first.gang.val_images) == (len(train), len(val))
    assert first.gang == replace(second.gang, node=0) and second.gang.node == 1
    # An epoch: as many global batches as the node with the fewest training images fills (6 each).
    assert first.gang.per_epoch == min(r.train for r in reports) // (BATCH // NODES)


def test_each_rank_trains_its_share_of_its_nodes_part_of_every_global_batch(
    sample_dir: Path, tmp_path: Path, joined: dict[int, tuple[Dataset, list[NodeInput]]]
) -> None:
    cfg = tiny_config(sample_dir, tmp_path, nodes=NODES, processes=RANKS, batch_size=BATCH)
    world = NODES * RANKS
    for node, (data, _) in joined.items():
        ranks = [
            NodeSampler(cfg, data, SimpleNamespace(rank=node * RANKS + r, world_size=world), data.gang)
            for r in range(RANKS)
        ]
        held_out = set(ranks[0].val_ids.tolist())
        assert sorted(i for rank in ranks for i in rank.val_share().tolist()) == sorted(held_out)
        for epoch in range(2):
            order = ranks[0].order(epoch)
            assert torch.equal(order, ranks[1].order(epoch)), "a node's ranks walk one order"
            assert sorted(order.tolist()) == ranks[0].train_ids.tolist() and not held_out & set(order.tolist())
            for batch in range(data.gang.per_epoch):
                shares = [rank.rank_ids(order, batch) for rank in ranks]
                assert torch.equal(torch.cat(shares), order[batch * 6 : (batch + 1) * 6])
                assert all(len(share) == 3 for share in shares)
        # A pure function of (seed, epoch, node): a retry reads the same; another epoch reshuffles.
        assert torch.equal(ranks[0].order(1), NodeSampler(cfg, data, ranks[0].group, data.gang).order(1))
        assert not torch.equal(ranks[0].order(0), ranks[0].order(1))
