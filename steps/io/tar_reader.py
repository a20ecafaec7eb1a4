"""WebDataset tar shards read in memory: one GET per tar, its images sliced out of the bytes.

A WebDataset tar holds samples as adjacent members sharing a basename up to its first dot
(``00042.jpg``, ``00042.json``, ``00042.cls``); ``jpg``/``jpeg``/``png``/``webp`` members are
images, a ``.cls`` member (or a ``.json`` member's ``"label"``) is a label. An image's row key
is ``<tar key>/<member name>``.

The ustar headers are parsed here rather than by ``tarfile``, which builds a ``TarInfo`` object
per member: for an image of three members ``tarfile`` takes ~0.10 ms of CPU, this 0.015 ms (one
``struct`` unpack and an Adler-32 checksum a header; ``bench/infer.py --only-tars``). An image's
bytes are copied out of the tar only when its reader asks, and the tar itself is the client's
buffer as received (``Storage.read_view``), never copied whole. GNU long names and pax ``path``
records are honoured; links, directories and other special members are skipped.

Damage is a reject, never a failed task: a member that runs past the end of the bytes (a
truncated tar), a header whose checksum does not match (corruption) or an unreadable tar each
become one rejected row (keyed by the member, or by the tar when no member name is known);
the samples before the damage are kept. A tar with no image at all is one rejected row too,
so every tar of a plan has at least one row (what ``unit_of`` relies on).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from zlib import adler32

from steps.errors import RejectedInput
from steps.io.storage import Storage, read_input_view

TAR_SUFFIX = ".tar"
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp"})
_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_REGULAR = (b"0", b"\0", b"7")  # regular files (7: contiguous)
_LABELS = ("cls", "json")


class TarDamage(Exception):
    """The tar bytes end or break before a complete member; ``name``: the member, when its header is sound."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(detail)
        self.name = name


def unit_of(row_key: str) -> str:
    """The tar a row key comes from: ``a/b.tar/x/1.jpg`` → ``a/b.tar``; a tar's own key is its own
    (the planner refuses tar keys with a ``.tar/`` directory, so the first one is the tar's end)."""
    cut = row_key.find(TAR_SUFFIX + "/")
    return row_key if cut < 0 else row_key[: cut + len(TAR_SUFFIX)]


# The ustar header fields read here, unpacked in one C call: name, size, checksum, type, magic, prefix.
_HEADER = struct.Struct("100s24x12s12x8sc100x6s2x80x155s")


def _pax_path(record: bytes) -> str | None:
    for line in record.split(b"\n"):
        _, _, entry = line.partition(b" ")
        keyword, _, value = entry.partition(b"=")
        if keyword == b"path":
            return value.decode("utf-8", "surrogateescape")
    return None


def tar_members(data: memoryview) -> Iterator[tuple[str, int, int]]:
    """``(name, offset, size)`` of each regular member, in order; raises ``TarDamage`` where the
    bytes stop making sense (after yielding every complete member before it)."""
    view, end, offset, next_name = data, len(data), 0, None
    unpack = _HEADER.unpack_from
    while offset < end:
        if offset + _BLOCK > end:
            raise TarDamage("", f"truncated tar: a partial header at byte {offset}")
        if not data[offset] and data[offset : offset + _BLOCK] == _ZERO_BLOCK:
            return  # the end-of-archive blocks
        name_field, size_field, sum_field, kind, magic, prefix = unpack(data, offset)
        # The checksum sums the header with its own field as spaces. Adler-32's low half is 1 + the
        # byte sum mod 65521: exact over 256 bytes (at most 65,280), and C where sum() is Python.
        header_sum = (
            (adler32(view[offset : offset + 256]) & 0xFFFF)
            + (adler32(view[offset + 256 : offset + _BLOCK]) & 0xFFFF)
            - 2
        )
        try:
            stored_sum = int(sum_field.rstrip(b"\0 "), 8)
            # GNU base-256 for sizes of 8 GB and more
            size = int(size_field.rstrip(b"\0 "), 8) if size_field[0] < 0x80 else int.from_bytes(size_field[1:], "big")
        except ValueError:
            stored_sum = size = -1
        if header_sum - sum(sum_field) + 8 * 32 != stored_sum or size < 0:
            raise TarDamage("", f"corrupt tar: header checksum mismatch at byte {offset}")
        start = offset + _BLOCK
        offset = start + -(-size // _BLOCK) * _BLOCK
        if next_name is None:
            name = name_field.rstrip(b"\0")
            if prefix[0] and magic.startswith(b"ustar"):
                name = prefix.rstrip(b"\0") + b"/" + name
            name = name.decode("utf-8", "surrogateescape")
        else:
            name, next_name = next_name, None
        if start + size > end:
            raise TarDamage(name, f"truncated tar: {name} needs {size} bytes, {end - start} are left")
        if kind in _REGULAR:
            yield name, start, size
        elif kind == b"L":  # GNU long name of the next member
            next_name = bytes(data[start : start + size]).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif kind == b"x":  # pax extended header of the next member
            next_name = _pax_path(bytes(data[start : start + size]))


def _label(members: dict[str, bytes]) -> str | None:
    if "cls" in members:
        return members["cls"].decode("utf-8", "replace").strip() or None
    if "json" in members:
        try:
            meta = json.loads(members["json"])
        except ValueError:
            return None
        label = meta.get("label") if isinstance(meta, dict) else None
        return None if label is None or isinstance(label, (dict, list)) else str(label)
    return None


@dataclass
class TarSamples:
    """One tar's images by row key, in member order, plus its rejects (key → reason)."""

    tar_key: str
    data: memoryview = field(default_factory=lambda: memoryview(b""))  # the tar, as its client lent it
    images: dict[str, tuple[int, int]] = field(default_factory=dict)  # row key → (offset, size) in data
    labels: dict[str, str] = field(default_factory=dict)
    rejects: dict[str, str] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        """Every row key: the images in member order, then the rejects (damage ends a tar)."""
        return [*self.images, *self.rejects]

    def image(self, key: str) -> bytes:
        """An image's bytes, copied out of the tar only when a reader asks (in its own thread)."""
        offset, size = self.images[key]
        return bytes(self.data[offset : offset + size])


def split_samples(tar_key: str, data: bytes | memoryview) -> TarSamples:
    """Group ``data``'s members into WebDataset samples and keep each sample's image."""
    data = memoryview(data).cast("B")
    found = TarSamples(tar_key, data)
    sample, members, image = None, {}, None

    def close() -> None:
        if image is not None:
            key = f"{tar_key}/{image[0]}"
            if key not in found.images:  # a repeated member name keeps its first copy
                found.images[key] = image[1:]
                label = _label(members)
                if label is not None:
                    found.labels[key] = label

    try:
        for name, offset, size in tar_members(data):
            dot = name.find(".", name.rfind("/") + 1)  # a sample is the name up to its basename's first dot
            prefix, extension = (name[:dot], name[dot + 1 :].lower()) if dot >= 0 else (name, "")
            if prefix != sample:
                close()
                sample, members, image = prefix, {}, None
            if extension in IMAGE_EXTENSIONS:
                image = image or (name, offset, size)
            elif extension in _LABELS:
                members[extension] = bytes(data[offset : offset + size])
        close()
    except TarDamage as damage:
        close()
        key = f"{tar_key}/{damage.name}" if damage.name else tar_key
        found.rejects[key if key not in found.images else tar_key] = str(damage)
    if not found.images and not found.rejects:
        found.rejects[tar_key] = "no images in the tar (no jpg, jpeg, png or webp members)"
    return found


def read_tar(source: Storage, tar_key: str) -> TarSamples:
    """One GET of ``tar_key``; an unreadable tar (gone, forbidden) is one rejected row."""
    try:
        data = read_input_view(source, tar_key)
    except RejectedInput as err:
        return TarSamples(tar_key, rejects={tar_key: str(err)})
    return split_samples(tar_key, data)


class TarMembers:
    """The samples of tars already read, readable like a ``Storage`` (``read``/``exists``) by row key: the
    per-image code paths (Pillow, device decode, preprocessing) read from it as from any input."""

    def __init__(self, tars: list[TarSamples]) -> None:
        self.uri = tars[0].tar_key if tars else ""
        self.keys = [key for tar in tars for key in tar.keys]
        self._tars = {key: tar for tar in tars for key in tar.images}
        self._rejects = {key: reason for tar in tars for key, reason in tar.rejects.items()}
        self.labels = {key: label for tar in tars for key, label in tar.labels.items()}

    def read(self, key: str) -> bytes:
        if key in self._rejects:
            raise RejectedInput(self._rejects[key])
        return self._tars[key].image(key)

    def exists(self, key: str) -> bool:
        return key in self._tars
