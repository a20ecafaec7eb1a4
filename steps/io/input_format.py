"""What a planned key is: one image object, or one WebDataset tar of many images.

``--input-format`` (PreprocessFlow, InferFlow, ``spot-batch verify``) says which; ``auto``
decides from the listing (``steps.planning.tars``). A shard task turns its planned keys into
readable inputs chunk by chunk (``InputFormat.chunks``): for images, the keys themselves on the
input storage; for tars, each tar is one chunk, fetched with one GET a few tars ahead of the
one being decoded, and its images are read from memory (``steps.io.tar_reader.TarMembers``)
under row keys ``<tar key>/<member name>``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from steps.io.storage import Storage
from steps.io.tar_reader import TarMembers, read_tar, unit_of

IMAGES, WEBDATASET, AUTO = "images", "webdataset", "auto"
INPUT_FORMATS = (AUTO, IMAGES, WEBDATASET)
TARS_AHEAD = 2  # tars fetched while one is decoded: memory is (1 + TARS_AHEAD) tars


def same_key(key: str) -> str:
    """One row per planned key: the row's key is its unit (``InputFormat.unit_of`` for images)."""
    return key


@dataclass(frozen=True)
class InputFormat:
    name: str

    @property
    def tars(self) -> bool:
        return self.name == WEBDATASET

    @property
    def unit_of(self) -> Callable[[str], str]:
        """A row key's planned key (``ChunkLedger``'s ``unit_of``)."""
        return unit_of if self.tars else same_key

    def chunk_size(self, chunk_size: int) -> int:
        """Planned keys per committed chunk: ``--chunk-size`` images, or one tar (a spot loss
        costs at most the tar in flight, and a tar's rows are known only once it is read)."""
        return 1 if self.tars else chunk_size

    def row_reader(self, source: Storage) -> Storage:
        """Reads one row's input bytes by its key (report cards' sample images): the object itself,
        or the image in its tar, the tar read whole (the last one kept, as samples share tars)."""
        return TarRows(source) if self.tars else source

    def chunks(self, source: Storage, chunks: Sequence[Sequence[str]]) -> Iterator[tuple[Storage, list[str]]]:
        """Per chunk, in order: where its inputs are read from and their row keys."""
        if not self.tars:
            yield from ((source, list(keys)) for keys in chunks)
            return

        def fetch(keys: Sequence[str]) -> TarMembers:
            return TarMembers([read_tar(source, key) for key in keys])

        with ThreadPoolExecutor(TARS_AHEAD, thread_name_prefix="spot-batch-tar") as pool:
            ahead: deque[Future[TarMembers]] = deque()
            for keys in chunks:
                ahead.append(pool.submit(fetch, keys))
                if len(ahead) > TARS_AHEAD:
                    members = ahead.popleft().result()
                    yield members, members.keys
            while ahead:
                members = ahead.popleft().result()
                yield members, members.keys


class TarRows:
    """``read(<tar key>/<member>)``: the member's bytes, one GET of the tar (kept until another)."""

    def __init__(self, source: Storage) -> None:
        self.uri = source.uri
        self.source = source
        self._last = TarMembers([])

    def read(self, key: str) -> bytes:
        if not self._last.exists(key):
            self._last = TarMembers([read_tar(self.source, unit_of(key))])
        return self._last.read(key)

    def exists(self, key: str) -> bool:
        return self.source.exists(unit_of(key))


IMAGE_OBJECTS = InputFormat(IMAGES)
TAR_SHARDS = InputFormat(WEBDATASET)


def input_format(name: str) -> InputFormat:
    """The resolved format of a run (``images`` or ``webdataset``), as ``start`` recorded it."""
    if name not in (IMAGES, WEBDATASET):
        raise ValueError(f"input format must be {IMAGES} or {WEBDATASET}, not {name!r}")
    return InputFormat(name)
