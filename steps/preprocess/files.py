"""Where PreprocessFlow's shard tasks write: Arrow- and Pillow-free, so flows/preprocess.py can name it
when imported (Metaflow imports the flow file for every task and every card refresh)."""

from __future__ import annotations

from steps.output.layout import edges_key, ledger_directory, resized_key, webdataset_directory
from steps.output.supersede import ShardFiles


def derived_files(key: str) -> tuple[str, ...]:
    return resized_key(key), edges_key(key)


def shard_directories(shard_name: str) -> tuple[str, ...]:
    return (webdataset_directory(shard_name),)


PREPROCESS_FILES = ShardFiles(
    chunk_directory=ledger_directory, derived=derived_files, shard_directories=shard_directories
)
