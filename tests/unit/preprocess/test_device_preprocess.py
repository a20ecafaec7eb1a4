"""``--device cuda`` preprocessing, run on CPU tensors (the same code), against the Pillow path.

Tolerance, per image, as PSNR: at the flow's default size (256) the resized JPEG is within 32 dB
of the Pillow path's and the edge map within 25 dB (a derivative amplifies small resampling
differences); same output sizes, same manifest apart from timings. Most of the difference is the
Pillow path's reduced-size (DCT-scaled) decode, not the tensor path: at 128 px, where libjpeg
decodes at 1/4 or 1/8 scale, the tensor path stays within 28 dB (its JPEG) and 27 dB (edges) of a
full-size Pillow decode + LANCZOS, while the Pillow path's own edge maps drift to 18 dB from that.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from steps.imaging.codec import decode, resize_to_fit
from steps.imaging.edges import sobel_edges
from steps.io.local_storage import LocalStorage
from steps.io.parquet import parquet_to_table
from steps.planning.inputs import list_inputs
from steps.preprocess.shard import preprocess_shard

COMPARED = ["key", "status", "reason", "input_bytes", "width", "height"]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255**2 / mse) if mse else float("inf")


def run(source: Path, out: Path, device: torch.device | None, size: int = 128) -> pd.DataFrame:
    storage = LocalStorage(source)
    preprocess_shard(
        name="all",
        keys=list_inputs(storage),
        source=storage,
        target=LocalStorage(out),
        size=size,
        threads=2,
        chunk_size=20,
        device=device,
    )
    return parquet_to_table((out / "_manifests" / "all.parquet").read_bytes()).to_pandas()


@pytest.fixture(scope="module")
def inputs(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample set plus two keys whose outputs would collide (the second is rejected)."""
    directory = tmp_path_factory.mktemp("inputs")
    for path in sample_dir.iterdir():
        shutil.copy(path, directory / path.name)
    first = sorted(sample_dir.glob("*.jpg"))[0]
    shutil.copy(first, directory / "0same.jpg")
    Image.open(first).save(directory / "0same.png")
    return directory


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_device_outputs_match_the_pillow_path_within_tolerance(inputs: Path, tmp_path: Path) -> None:
    pillow = run(inputs, tmp_path / "pillow", None, size=256)
    tensor = run(inputs, tmp_path / "tensor", torch.device("cpu"), size=256)
    assert pillow[COMPARED].equals(tensor[COMPARED])
    assert set(pillow["status"]) == {"ok", "rejected"}
    assert "is taken by 0same.jpg" in pillow.set_index("key").loc["0same.png", "reason"]
    for kind, floor in (("resized", 32.0), ("edges", 25.0)):
        names = sorted(p.name for p in (tmp_path / "pillow" / kind).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "tensor" / kind).iterdir())
        assert len(names) == (pillow["status"] == "ok").sum()
        for name in names:
            ours, theirs = pixels(tmp_path / "tensor" / kind / name), pixels(tmp_path / "pillow" / kind / name)
            assert ours.shape == theirs.shape, name
            assert psnr(ours, theirs) >= floor, f"{kind}/{name}"


def test_small_device_outputs_match_a_full_size_decode(inputs: Path, tmp_path: Path) -> None:
    manifest = run(inputs, tmp_path / "tensor", torch.device("cpu"), size=128)
    for key in manifest["key"][manifest["status"] == "ok"]:
        reference = resize_to_fit(decode((inputs / key).read_bytes()).image, 128)  # no reduced-size decode
        stem = Path(key).stem
        assert psnr(pixels(tmp_path / "tensor" / "resized" / f"{stem}.jpg"), np.asarray(reference)) >= 28.0, key
        edges = pixels(tmp_path / "tensor" / "edges" / f"{stem}.png")
        assert psnr(edges, np.asarray(sobel_edges(reference))) >= 27.0, key


def test_device_path_resumes_missing_chunks_exactly_once(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run(inputs, out, torch.device("cpu"))
    chunks = sorted((out / "_ledger" / "all").iterdir())
    assert len(chunks) == 3  # 56 keys, chunks of 20
    (out / "_manifests" / "all.parquet").unlink()
    chunks[1].unlink()
    (out / "resized" / f"{Path(first['key'][first['status'] == 'ok'].iloc[25]).stem}.jpg").unlink()
    resumed = run(inputs, out, torch.device("cpu"))
    assert resumed[COMPARED].equals(first[COMPARED])
    assert len(list((out / "resized").iterdir())) == (first["status"] == "ok").sum()


def test_gray_jpegs_are_written_gray_past_an_encoder_that_takes_three_channels_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA's encode_jpeg refuses one channel ("The number of channels should be 3"); the CPU's
    takes it. With an encoder that refuses it as CUDA's does, gray images still come out, gray."""
    import steps.preprocess.device as device_path

    real_encode = device_path.encode_jpeg

    def three_channels_only(images: list[torch.Tensor], quality: int) -> list[torch.Tensor]:
        for image in images:
            if image.shape[0] != 3:
                raise RuntimeError(f"The number of channels should be 3, got: {image.shape[0]}")
        return real_encode(images, quality=quality)

    monkeypatch.setattr(device_path, "encode_jpeg", three_channels_only)
    source = tmp_path / "in"
    source.mkdir()
    rng = np.random.default_rng(0)
    colour = Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)).resize((600, 400))
    colour.save(source / "colour.jpg", quality=92)
    colour.convert("L").save(source / "gray.jpg", quality=92)
    tensor = run(source, tmp_path / "tensor", torch.device("cpu"))
    run(source, tmp_path / "pillow", None)
    assert list(tensor["status"]) == ["ok", "ok"], list(tensor["reason"])
    for stem, mode in (("colour", "RGB"), ("gray", "L")):
        with Image.open(tmp_path / "tensor" / "resized" / f"{stem}.jpg") as made:
            assert made.mode == mode
        ours, theirs = (pixels(tmp_path / run_ / "resized" / f"{stem}.jpg") for run_ in ("tensor", "pillow"))
        assert psnr(ours, theirs) >= 30.0, stem
