"""The report card's sections for tasks other than classify.

Each shard task sends the join a small, bounded summary of its own manifest (``shard_digest``):

* embed: the norms of its vectors (count, min, mean, max) and, for ``NEIGHBOUR_QUERIES`` sample
  images, their ``NEIGHBOURS`` nearest neighbours within the shard (exact, cosine);
* detect: the number of boxes per label, and a few sample images with their boxes.

The join adds them up and draws them (``task_sections``); nothing grows with the dataset.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import ImageDraw

from steps.imaging.codec import decode, encode, thumbnail_jpeg
from steps.io.storage import Storage
from steps.report import Chart, Images, Table, bar_chart_png

NEIGHBOUR_QUERIES = 2  # per shard
NEIGHBOURS = 4
DETECT_SAMPLES = 3  # per shard
SHOWN = 6  # rows of sample images on the card
THUMBNAIL = 160


def _vectors(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column).combine_chunks()
    flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(len(values), values.type.list_size)


def embed_digest(manifest: pa.Table, column: str = "embedding") -> dict:
    ok = manifest.filter(pc.equal(manifest.column("status"), "ok")).select(["key", column])
    if ok.num_rows == 0:
        return {"kind": "embed", "norms": [], "neighbours": []}
    vectors = _vectors(ok, column)
    norms = np.linalg.norm(vectors, axis=1)
    keys = ok.column("key").to_pylist()
    unit = vectors / np.where(norms > 0, norms, 1)[:, None]
    neighbours = []
    for row in range(min(NEIGHBOUR_QUERIES, len(keys))):
        scores = unit @ unit[row]
        order = [int(i) for i in np.argsort(-scores) if i != row][:NEIGHBOURS]
        neighbours.append([keys[row], [[keys[i], round(float(scores[i]), 4)] for i in order]])
    stats = [len(norms), float(norms.min()), float(norms.mean()), float(norms.max())]
    return {"kind": "embed", "norms": stats, "neighbours": neighbours}


def detect_digest(manifest: pa.Table) -> dict:
    ok = manifest.filter(pc.equal(manifest.column("status"), "ok"))
    labels = ok.column("labels").to_pylist()
    counts = Counter(label for image in labels for label in image)
    found = [i for i, image in enumerate(labels) if image][:DETECT_SAMPLES]
    samples = [
        [ok.column("key")[i].as_py(), ok.column("boxes")[i].as_py(), labels[i], ok.column("scores")[i].as_py()]
        for i in found
    ]
    return {"kind": "detect", "counts": dict(counts), "images": ok.num_rows, "samples": samples}


def shard_digest(task: str, manifest: pa.Table) -> dict | None:
    """What the join needs of a shard's outputs for ``task``'s card sections (None: nothing)."""
    if task == "detect":
        return detect_digest(manifest)
    if "embedding" in manifest.column_names and pa.types.is_fixed_size_list(manifest.schema.field("embedding").type):
        return embed_digest(manifest)
    return None


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
        chart = bar_chart_png([c[0] for c in top], [c[1] for c in top], "boxes", "boxes per label")
        sections.append(Chart("Detections by label", chart))
    samples = [s for d in digests for s in d["samples"]][:SHOWN]
    if samples:
        drawn = [
            (f"{len(boxes)} boxes: {', '.join(sorted(set(labels)))[:60]}", boxes_drawn(source, key, boxes, labels))
            for key, boxes, labels, _ in samples
        ]
        sections.append(Images("Sample detections (boxes above --min-score)", drawn))
    return sections
