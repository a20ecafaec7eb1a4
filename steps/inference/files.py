"""Where InferFlow's shard tasks write: torch-free, so flows/infer.py can name it when imported
(Metaflow imports the flow file for every task and every card refresh)."""

from __future__ import annotations

from steps.output.layout import PART_STEM, shard_directory
from steps.output.supersede import ShardFiles


def no_derived_files(key: str) -> tuple[str, ...]:
    """Predictions live only in the shard's parts: a removed key leaves no other file behind."""
    return ()


# A shard's manifest keeps what the join reads (stats, and a classifier's scores), not the outputs:
# embeddings and boxes stay in the parts alone.
MANIFEST_COLUMNS = ("key", "status", "reason", "label", "score")

INFER_FILES = ShardFiles(
    chunk_directory=shard_directory,
    derived=no_derived_files,
    chunk_stem=PART_STEM,
    manifest_columns=MANIFEST_COLUMNS,
)
