"""Reading WebDataset tars in memory: samples, labels, names, and damage as rejects."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from steps.errors import RejectedInput
from steps.io.input_format import InputFormat
from steps.io.local_storage import LocalStorage
from steps.io.tar_reader import TarMembers, read_tar, split_samples, tar_members, unit_of
from tests.support.tars import sample_members, tar_bytes


def three_samples() -> bytes:
    return tar_bytes(
        [
            *sample_members("a/000", b"jpeg-0", "cat"),
            ("a/001.json", b'{"label": "dog"}'),
            ("a/001.PNG", b"png-1"),
            ("a/002.txt", b"a caption, no image"),
            *sample_members("a/003", b"webp-3", extension="webp"),
            ("a/003.edges.png", b"an edge map is not the sample's image"),
        ]
    )


def test_samples_group_by_basename_and_keep_each_image_with_its_label() -> None:
    found = split_samples("shards/00.tar", three_samples())
    assert found.keys == ["shards/00.tar/a/000.jpg", "shards/00.tar/a/001.PNG", "shards/00.tar/a/003.webp"]
    assert [found.image(k) for k in found.keys] == [b"jpeg-0", b"png-1", b"webp-3"]
    assert found.labels == {"shards/00.tar/a/000.jpg": "cat", "shards/00.tar/a/001.PNG": "dog"}
    assert not found.rejects
    assert {unit_of(k) for k in found.keys} == {"shards/00.tar"} and unit_of("shards/00.tar") == "shards/00.tar"


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_member_names_are_read_from_gnu_and_pax_headers(fmt: int) -> None:
    name = "d" * 120 + "/" + "sample-" + "x" * 110 + ".jpg"
    data = tar_bytes([(name, b"long"), ("short.jpg", b"short")], fmt)
    assert [n for n, _, _ in tar_members(memoryview(data))] == [name, "short.jpg"]
    assert split_samples("t.tar", data).keys == [f"t.tar/{name}", "t.tar/short.jpg"]


def test_a_truncated_tar_keeps_the_samples_before_the_cut_and_rejects_the_rest() -> None:
    data = tar_bytes([*sample_members("000", b"x" * 3000), *sample_members("001", b"y" * 3000)])
    cut = data.index(b"y" * 3000) + 1000  # inside the second image
    found = split_samples("t.tar", data[:cut])
    assert found.keys == ["t.tar/000.jpg", "t.tar/001.jpg"]
    assert found.image("t.tar/000.jpg") == b"x" * 3000
    assert found.rejects == {"t.tar/001.jpg": "truncated tar: 001.jpg needs 3000 bytes, 1000 are left"}
    mid_header = split_samples("t.tar", data[: data.index(b"y" * 3000) - 200])
    assert list(mid_header.rejects) == ["t.tar"] and "partial header" in mid_header.rejects["t.tar"]


def test_a_corrupt_header_is_a_reject_and_an_imageless_tar_is_one() -> None:
    data = bytearray(tar_bytes([*sample_members("000", b"x" * 600), *sample_members("001", b"y" * 600)]))
    second = data.index(b"001.jpg")
    data[second + 130] ^= 0x01  # a bit flip in the size field
    found = split_samples("t.tar", bytes(data))
    assert found.keys == ["t.tar/000.jpg", "t.tar"]
    assert found.rejects["t.tar"].startswith("corrupt tar: header checksum mismatch at byte")
    assert split_samples("t.tar", tar_bytes([("readme.txt", b"hi")])).rejects == {
        "t.tar": "no images in the tar (no jpg, jpeg, png or webp members)"
    }
    assert split_samples("t.tar", b"not a tar at all" * 40).rejects == {
        "t.tar": "corrupt tar: header checksum mismatch at byte 0"
    }


def test_tar_members_read_like_storage_and_an_unreadable_tar_is_a_reject(tmp_path: Path) -> None:
    (tmp_path / "00.tar").write_bytes(three_samples())
    source = LocalStorage(tmp_path)
    members = TarMembers([read_tar(source, "00.tar"), read_tar(source, "gone.tar")])
    assert members.keys == ["00.tar/a/000.jpg", "00.tar/a/001.PNG", "00.tar/a/003.webp", "gone.tar"]
    assert members.read("00.tar/a/001.PNG") == b"png-1"
    with pytest.raises(RejectedInput, match="unreadable object"):
        members.read("gone.tar")

    chunks = list(InputFormat("webdataset").chunks(source, [["00.tar"], ["gone.tar"], ["00.tar"]]))
    assert [keys for _, keys in chunks] == [members.keys[:3], ["gone.tar"], members.keys[:3]]
    assert list(InputFormat("images").chunks(source, [["a", "b"]])) == [(source, ["a", "b"])]

    rows = InputFormat("webdataset").row_reader(source)  # what report cards read sample images with
    assert rows.read("00.tar/a/003.webp") == b"webp-3" and rows.exists("00.tar/a/000.jpg")
    assert InputFormat("images").row_reader(source) is source
