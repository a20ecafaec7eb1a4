"""WebDataset tars written as img2dataset and PreprocessFlow write them, for reader and flow tests."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable
from pathlib import Path


def tar_bytes(members: Iterable[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sample_members(
    stem: str, image: bytes, label: str | None = None, extension: str = "jpg"
) -> list[tuple[str, bytes]]:
    """One sample: its image, a ``.json`` (img2dataset-like metadata) and, with a label, a ``.cls``."""
    members = [(f"{stem}.{extension}", image), (f"{stem}.json", json.dumps({"url": f"http://x/{stem}"}).encode())]
    if label is not None:
        members.append((f"{stem}.cls", label.encode()))
    return members


def images_to_tars(images: dict[str, bytes], directory: Path, per_tar: int, labels: dict[str, str]) -> list[Path]:
    """Pack ``images`` (name → bytes, in name order) into ``directory/NNNNN.tar`` of ``per_tar`` samples."""
    directory.mkdir(parents=True, exist_ok=True)
    names = sorted(images)
    paths = []
    for start in range(0, len(names), per_tar):
        members = []
        for name in names[start : start + per_tar]:
            stem, _, extension = name.rpartition(".")
            members += sample_members(stem.replace(".", "_"), images[name], labels.get(name), extension.lower())
        path = directory / f"{start // per_tar:05d}.tar"
        path.write_bytes(tar_bytes(members))
        paths.append(path)
    return paths
