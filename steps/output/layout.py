"""Every key prefix and file name of an input or output location: the one owner of the layout.

Output location of a sharded run::

    _lease.json                         the lease of the run writing here (holder, heartbeat, expiry);
                                        local outputs also keep _lease.json.lock, its flock guard
    _plan/layout.json                   the prefix width and range starts every later run keeps
    _plan/<shard>.jsonl                 a shard's sorted keys, one JSON string a line (the fan-out carries its name)
    _manifests/<shard>.parquet          a shard's completion marker, written last
    _attempts/<run>/<shard>/<n>.json    when attempt n of a shard task started (billing counts killed ones)
    _ledger/<shard>/chunk-NNNNN.parquet  preprocessing: committed chunks (one row per input key)
    resized/<stem>.jpg, edges/<stem>.png preprocessing outputs
    predictions/<shard>/part-NNNNN.parquet inference: committed parts, one row per input key
    webdataset/<shard>/chunk-NNNNN-PPP.tar  preprocessing --format webdataset: a chunk's samples
    webdataset/<shard>/chunk-NNNNN.json     what that chunk's tars hold (samples digest, parts)

TrainFlow's output: ``models/<run id>/model.pt`` and ``checkpoints/<run id>/``. An input root may
hold ``labels.csv`` (``key,label``), which is metadata, never an input key.
"""

from __future__ import annotations

# Input location
LABELS_FILE = "labels.csv"  # key,label: classes for training, ground truth for inference
METADATA_NAMES = frozenset({LABELS_FILE})  # files at the input root that describe the data

# Output location: planning and completion
PLAN_DIR = "_plan"
PLAN_LAYOUT_KEY = f"{PLAN_DIR}/layout.json"
MANIFEST_DIR = "_manifests"
LEASE_KEY = "_lease.json"  # the one-writer lease: which run writes this output (steps.output.lease)
PROBE_DIR = "_probe"  # write-permission probes in ``start``, deleted at once
ATTEMPTS_DIR = "_attempts"  # one start record per task attempt: what killed attempts billed

# Output location: per-flow outputs
LEDGER_DIR = "_ledger"
RESIZED_DIR = "resized"
EDGES_DIR = "edges"
PREDICTIONS_DIR = "predictions"
WEBDATASET_DIR = "webdataset"
PART_STEM = "part"
MODELS_DIR = "models"
CHECKPOINTS_DIR = "checkpoints"


def object_stem(key: str) -> str:
    """The file name without directories or its last extension: ``a/<sha>.jpg`` → ``<sha>``,
    ``IMG_1.v2.jpg`` → ``IMG_1.v2``, ``.hidden.png`` → ``.hidden``."""
    name = key.rsplit("/", 1)[-1]
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def key_stem(key: str) -> str:
    """The key without its last extension, directories kept: what output files are named by."""
    directory = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
    return directory + object_stem(key)


PLAN_KEYS_SUFFIX = ".jsonl"  # one JSON string a line: no key, however odd, can split


def plan_keys_key(shard_name: str) -> str:
    return f"{PLAN_DIR}/{shard_name}{PLAN_KEYS_SUFFIX}"


def planned_shard_name(plan_key: str) -> str | None:
    """The shard a ``_plan/`` key list belongs to; None for other files there (the layout)."""
    name = plan_key.rsplit("/", 1)[-1]
    return name.removesuffix(PLAN_KEYS_SUFFIX) if name.endswith(PLAN_KEYS_SUFFIX) else None


def manifest_key(shard_name: str) -> str:
    return f"{MANIFEST_DIR}/{shard_name}.parquet"


def attempt_key(run_id: str, shard_name: str, attempt: int) -> str:
    return f"{ATTEMPTS_DIR}/{run_id}/{shard_name}/{attempt}.json"


def manifest_shard_name(key: str) -> str:
    return object_stem(key)


def ledger_directory(shard_name: str) -> str:
    return f"{LEDGER_DIR}/{shard_name}"


def resized_key(key: str) -> str:
    return f"{RESIZED_DIR}/{key_stem(key)}.jpg"


def edges_key(key: str) -> str:
    return f"{EDGES_DIR}/{key_stem(key)}.png"


def webdataset_directory(shard_name: str) -> str:
    return f"{WEBDATASET_DIR}/{shard_name}"


def webdataset_tar_key(shard_name: str, chunk: int, part: int) -> str:
    return f"{webdataset_directory(shard_name)}/chunk-{chunk:05d}-{part:03d}.tar"


def webdataset_index_key(shard_name: str, chunk: int) -> str:
    return f"{webdataset_directory(shard_name)}/chunk-{chunk:05d}.json"


def webdataset_sample_id(shard_name: str, position: int) -> str:
    """A sample's ``__key__`` in the tars: WebDataset cuts member names at the first dot, so the
    id is the shard (dots replaced) and the key's position in the shard's sorted key list."""
    return f"{shard_name.replace('.', '_')}-{position:09d}"


def shard_directory(shard_name: str) -> str:
    """Where InferFlow commits a shard's prediction parts."""
    return f"{PREDICTIONS_DIR}/{shard_name}"


def model_key(run_id: str) -> str:
    return f"{MODELS_DIR}/{run_id}/model.pt"
