"""The report card's sections for tasks other than classify.

Each shard task sends the join a small, bounded summary of its own outputs (``shard_digest``, which
reads the shard's parts back one at a time, only the columns it needs):

* embed: the norms of its vectors (count, min, mean, max) and, for ``NEIGHBOUR_QUERIES`` sample
  images, their ``NEIGHBOURS`` nearest neighbours within the shard (exact, cosine);
* detect: the number of boxes per label, and a few sample images with their boxes.

The join adds them up and draws them (``task_sections``); nothing grows with the dataset.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import ImageDraw

from steps.imaging.codec import decode, encode, thumbnail_jpeg
from steps.io.storage import Storage
from steps.report import Chart, Images, Table, bar_chart

NEIGHBOUR_QUERIES = 2  # per shard
NEIGHBOURS = 4
DETECT_SAMPLES = 3  # per shard
SHOWN = 6  # rows of sample images on the card
THUMBNAIL = 160


def _vectors(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column).combine_chunks()
    flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(len(values), values.type.list_size)


def _ok_rows(part: pa.Table) -> pa.Table:
    return part.filter(pc.equal(part.column("status"), "ok"))


def embed_digest(parts: Iterable[pa.Table], column: str = "embedding") -> dict:
    """Norms and nearest neighbours over the shard's parts, read one at a time: the queries are
    its first ok rows, and each query keeps its best ``NEIGHBOURS`` as the parts go by."""
    count, low, total, high = 0, float("inf"), 0.0, 0.0
    query_keys: list[str] = []
    queries = np.empty((0, 0), np.float32)
    best: list[list[tuple[float, str]]] = []
    for part in parts:
        ok = _ok_rows(part)
        if ok.num_rows == 0:
            continue
        vectors = _vectors(ok, column)
        norms = np.linalg.norm(vectors, axis=1)
        count, low, total, high = count + len(norms), min(low, norms.min()), total + norms.sum(), max(high, norms.max())
        unit = vectors / np.where(norms > 0, norms, 1)[:, None]
        keys = ok.column("key").to_pylist()
        if len(query_keys) < NEIGHBOUR_QUERIES:
            taken = min(NEIGHBOUR_QUERIES - len(query_keys), len(keys))
            query_keys += keys[:taken]
            queries = unit[:taken] if not len(queries) else np.vstack([queries, unit[:taken]])
            best += [[] for _ in range(taken)]
        for query, (query_key, scores) in enumerate(zip(query_keys, queries @ unit.T, strict=True)):
            candidates = [(float(scores[i]), keys[i]) for i in np.argsort(-scores)[: NEIGHBOURS + 1]]
            best[query] = sorted(best[query] + [c for c in candidates if c[1] != query_key], reverse=True)[:NEIGHBOURS]
    if not count:
        return {"kind": "embed", "norms": [], "neighbours": []}
    neighbours = [
        [key, [[k, round(score, 4)] for score, k in found]] for key, found in zip(query_keys, best, strict=True)
    ]
    return {"kind": "embed", "norms": [count, float(low), float(total / count), float(high)], "neighbours": neighbours}


def detect_digest(parts: Iterable[pa.Table]) -> dict:
    """Boxes per label and the first ``DETECT_SAMPLES`` images with boxes, over parts read one at a time."""
    counts: Counter[str] = Counter()
    images, samples = 0, []
    for part in parts:
        ok = _ok_rows(part)
        images += ok.num_rows
        labels = ok.column("labels").to_pylist()
        counts.update(label for image in labels for label in image)
        for i in [i for i, image in enumerate(labels) if image][: DETECT_SAMPLES - len(samples)]:
            samples.append(
                [ok.column("key")[i].as_py(), ok.column("boxes")[i].as_py(), labels[i], ok.column("scores")[i].as_py()]
            )
    return {"kind": "detect", "counts": dict(counts), "images": images, "samples": samples}


DIGEST_COLUMNS = ("key", "status", "embedding", "boxes", "labels", "scores")  # what a digest may read


def shard_digest(task: str, parts: Iterable[pa.Table]) -> dict | None:
    """What the join needs of a shard's outputs for ``task``'s card sections (None: nothing).
    ``parts``: the shard's committed parts in order, each read with ``DIGEST_COLUMNS``."""
    if task == "detect":
        return detect_digest(parts)
    parts = iter(parts)
    first = next(parts, None)
    if first is None or "embedding" not in first.column_names:
        return None
    if not pa.types.is_fixed_size_list(first.schema.field("embedding").type):
        return None
    return embed_digest(chain([first], parts))


def boxes_drawn(source: Storage, key: str, boxes: Sequence[Sequence[float]], labels: Sequence[str]) -> bytes:
    """A thumbnail of ``key`` with its boxes (original upright pixels) drawn and labelled."""
    decoded = decode(source.read(key), max_side=THUMBNAIL)
    image = decoded.image.convert("RGB")
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    scale_x, scale_y = image.width / decoded.width, image.height / decoded.height
    draw = ImageDraw.Draw(image)
    for (x0, y0, x1, y1), label in zip(boxes, labels, strict=True):
        box = (x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y)
        draw.rectangle(box, outline=(255, 40, 40), width=2)
        draw.text((box[0] + 2, box[1] + 1), label, fill=(255, 255, 0))
    return encode(image, "JPEG")


def task_sections(digests: Sequence[dict], source: Storage) -> list[Table | Images | Chart]:
    """The card sections of the shards' digests (all of one kind), added up."""
    if not digests:
        return []
    if digests[0]["kind"] == "embed":
        norms = [d["norms"] for d in digests if d["norms"]]
        count = sum(n[0] for n in norms)
        sections: list[Table | Images | Chart] = [
            Table(
                "Embedding norms (1.0 = L2-normalised; stored as float16)",
                ["vectors", "min", "mean", "max"],
                [
                    [
                        count,
                        f"{min(n[1] for n in norms):.4f}" if norms else "",
                        f"{sum(n[0] * n[2] for n in norms) / max(count, 1):.4f}",
                        f"{max(n[3] for n in norms):.4f}" if norms else "",
                    ]
                ],
            )
        ]
        for query, neighbours in [q for d in digests for q in d["neighbours"]][:SHOWN]:
            images = [("query", thumbnail_jpeg(source.read(query), THUMBNAIL))]
            images += [
                (f"cosine {score:.3f}", thumbnail_jpeg(source.read(key), THUMBNAIL)) for key, score in neighbours
            ]
            sections.append(Images(f"Nearest neighbours of {query} (within its shard)", images))
        return sections
    counts: Counter[str] = Counter()
    for digest in digests:
        counts.update(digest["counts"])
    images = sum(d["images"] for d in digests)
    top = counts.most_common(40)
    sections = [
        Table(
            f"Detections by label ({sum(counts.values())} boxes in {images} images)",
            ["label", "boxes"],
            [list(row) for row in top],
        )
    ]
    if top:
        sections.append(Chart("Detections by label", bar_chart([c[0] for c in top], [c[1] for c in top], "boxes")))
    samples = [s for d in digests for s in d["samples"]][:SHOWN]
    if samples:
        drawn = [
            (f"{len(boxes)} boxes: {', '.join(sorted(set(labels)))[:60]}", boxes_drawn(source, key, boxes, labels))
            for key, boxes, labels, _ in samples
        ]
        sections.append(Images("Sample detections (boxes above --min-score)", drawn))
    return sections
