"""The tensor imaging path (torchvision on CPU tensors: the code that runs on CUDA) against Pillow."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode

from steps.imaging import tensor_decode, tensor_resize
from steps.imaging.codec import center_crop, decode, fit_within, resize_to_fit
from steps.imaging.edges import sobel_edges
from steps.imaging.jpeg_header import read_jpeg_header
from steps.imaging.tensor_decode import AS_STORED, RGB, decode_jpegs, decoder_available, device_takes, upright
from steps.imaging.tensor_edges import sobel_edges as tensor_sobel_edges
from steps.imaging.tensor_resize import resize_and_center_crop
from steps.imaging.tensor_resize import resize_to_fit as tensor_resize_to_fit
from steps.inference.pipeline import prepare_image

CPU = torch.device("cpu")


def photo(width: int = 120, height: int = 80, seed: int = 0) -> Image.Image:
    """Smooth gradients plus a little noise: compresses like a photo, and has edges."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1).astype(np.int16)
    pixels += rng.integers(-8, 9, pixels.shape, dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, orientation: int = 1, **save_args: object) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(buffer, "JPEG", quality=92, exif=exif.tobytes(), **save_args)
    return buffer.getvalue()


def as_array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.permute(1, 2, 0).numpy().squeeze(-1) if tensor.shape[0] == 1 else tensor.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_header_orientation_and_upright_match_pillow(orientation: int) -> None:
    data = jpeg(photo(), orientation)
    header = read_jpeg_header(data)
    assert header is not None and header.orientation == orientation and header.components == 3
    expected = decode(data)
    assert header.upright_size == (expected.width, expected.height)
    with Image.open(io.BytesIO(data)) as stored:
        reference = np.asarray(ImageOps.exif_transpose(stored.convert("RGB")))
    (tensor,) = decode_jpegs([data], [header], CPU)
    assert np.array_equal(as_array(tensor), reference)


def test_header_routes_what_tensor_decoders_cannot_take_to_pillow(sample_dir: Path) -> None:
    image = photo()
    cmyk, png, progressive, gray = io.BytesIO(), io.BytesIO(), jpeg(image, progressive=True), jpeg(image.convert("L"))
    image.convert("CMYK").save(cmyk, "JPEG")
    image.save(png, "PNG")
    good = jpeg(image)
    routed = {
        "cmyk": cmyk.getvalue(),
        "png": png.getvalue(),
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "text": b"not an image",
        "no image data": good[:20] + b"\xff\xd9",
    }
    for name, data in routed.items():
        assert read_jpeg_header(data) is None, name
    assert read_jpeg_header(progressive).progressive and not read_jpeg_header(good).progressive
    assert read_jpeg_header(gray).components == 1
    assert read_jpeg_header(good + b"\x00" * 10) is not None  # zero padding after EOI
    for path in sorted(sample_dir.glob("*.jpg")):  # every sample JPEG: routed, or agrees with Pillow
        data = path.read_bytes()
        header = read_jpeg_header(data)
        if header is not None:
            decoded = decode(data)
            assert header.upright_size == (decoded.width, decoded.height), path.name


def test_a_refused_image_does_not_fail_its_batch() -> None:
    good = jpeg(photo())
    header = read_jpeg_header(good)
    corrupt = good[:400] + bytes(range(256)) * 4 + good[1424:]
    decoded = decode_jpegs([good, corrupt, good], [header] * 3, CPU)
    assert decoded[0] is not None and decoded[2] is not None and decoded[1] is None
    assert decode_jpegs([], [], CPU) == []


def test_gray_stays_one_channel_as_stored_and_becomes_three_for_rgb() -> None:
    data = jpeg(photo().convert("L"))
    header = read_jpeg_header(data)
    assert decode_jpegs([data], [header], CPU, AS_STORED)[0].shape[0] == 1
    assert decode_jpegs([data], [header], CPU, RGB)[0].shape[0] == 3


@pytest.mark.parametrize("orientation", [1, 6])
def test_tensor_center_crop_matches_the_pillow_inference_transform(orientation: int) -> None:
    data = jpeg(photo(640, 480), orientation)
    (tensor,) = decode_jpegs([data], [read_jpeg_header(data)], CPU)
    for fraction in (1.0, 0.875):
        ours = resize_and_center_crop(tensor, 64, fraction).permute(1, 2, 0).numpy().astype(np.int16)
        pillow = prepare_image(data, 64, fraction).astype(np.int16)  # reduced-size (draft) decode first
        assert ours.shape == pillow.shape == (64, 64, 3)
        assert np.abs(ours - pillow).mean() < 2.0


def test_tensor_resize_to_fit_is_close_to_pillow_lanczos() -> None:
    image = photo(400, 300)
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    ours = tensor_resize_to_fit(tensor, 100)
    pillow = np.asarray(resize_to_fit(image, 100)).astype(np.int16)
    assert tuple(ours.shape) == (3, 75, 100)
    assert np.abs(as_array(ours).astype(np.int16) - pillow).mean() < 2.0
    assert tensor_resize_to_fit(tensor, 1000) is tensor  # never upscales


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_tensor_sobel_is_the_numpy_sobel(mode: str) -> None:
    image = photo(90, 70).convert(mode)
    pixels = np.array(image)
    tensor = torch.from_numpy(pixels[None] if mode == "L" else pixels.transpose(2, 0, 1).copy())
    assert np.array_equal(as_array(tensor_sobel_edges(tensor)), np.asarray(sobel_edges(image)))


def test_upright_is_the_identity_for_unknown_orientations() -> None:
    tensor = torch.arange(6, dtype=torch.uint8).view(1, 2, 3)
    assert upright(tensor, 1) is tensor and upright(tensor, 0) is tensor


def test_progressive_jpegs_are_decoded_on_the_cpu_with_cuda() -> None:
    """nvJPEG decodes progressive JPEGs on its slow path; the CPU tensor decoder is fine with them."""
    progressive, baseline = (read_jpeg_header(jpeg(photo(), progressive=p)) for p in (True, False))
    assert not device_takes(progressive, torch.device("cuda", 0))  # decided from the header: no CUDA needed
    assert device_takes(progressive, CPU) and device_takes(baseline, CPU)
    assert not device_takes(None, CPU)


def test_an_unavailable_device_decoder_is_said_once_and_routes_every_image_to_pillow(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_nvjpeg(*args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("decode_jpeg_cuda: torchvision not compiled with nvJPEG support")

    monkeypatch.setattr(tensor_decode, "decode_jpeg", no_nvjpeg)
    decoder_available.cache_clear()
    try:
        header = read_jpeg_header(jpeg(photo()))
        assert [device_takes(header, CPU) for _ in range(3)] == [False] * 3
        warnings = [line for line in capsys.readouterr().err.splitlines() if "WARNING" in line]
        assert len(warnings) == 1 and "not compiled with nvJPEG" in warnings[0] and "Pillow" in warnings[0]
    finally:
        decoder_available.cache_clear()
    monkeypatch.undo()
    assert device_takes(header, CPU)  # the real decoder, probed again


def refuses_like_cuda(resize: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``F.resize`` that raises where CUDA's antialiased kernel does: its shared memory, 48 KB a block
    (taps of one row and one column of outputs in float32, pytorch's ``upsample_gen2d_aa_out_frame``)."""

    def resize_or_refuse(
        image: torch.Tensor, size: list[int], interpolation: InterpolationMode, antialias: bool
    ) -> torch.Tensor:
        per_scale = 2 if interpolation == InterpolationMode.BICUBIC else 1
        taps_h = 2 * math.ceil(per_scale * image.shape[-2] / size[0]) + 1
        taps_w = 2 * math.ceil(per_scale * image.shape[-1] / size[1]) + 1
        if antialias and (32 * taps_w + 33 * taps_h) * 4 > 48 * 1024:
            raise RuntimeError("Too much shared memory required")
        return resize(image, size, interpolation=interpolation, antialias=antialias)

    return resize_or_refuse


@pytest.mark.parametrize("huge", [(600, 9000), (9000, 9000)])
def test_huge_downscales_shrink_in_blocks_first_and_stay_close_to_one_step(
    huge: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    height, width = huge
    pixels = np.asarray(photo(width // 30, height // 30).resize((width, height), Image.Resampling.BILINEAR))
    tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
    real = tensor_resize.F.resize
    fit_width, fit_height = fit_within(width, height, 128)
    crop = center_crop(width, height, 64, 0.875)
    one_step_fit = real(tensor, [fit_height, fit_width], interpolation=InterpolationMode.BICUBIC, antialias=True)
    one_step_crop = real(tensor, [crop.height, crop.width], interpolation=InterpolationMode.BILINEAR, antialias=True)
    one_step_crop = one_step_crop[:, crop.top : crop.top + 64, crop.left : crop.left + 64]
    with pytest.raises(RuntimeError, match="shared memory"):
        refuses_like_cuda(real)(tensor, [fit_height, fit_width], InterpolationMode.BICUBIC, True)
    monkeypatch.setattr(tensor_resize.F, "resize", refuses_like_cuda(real))
    for ours, theirs in (
        (tensor_resize_to_fit(tensor, 128), one_step_fit),
        (resize_and_center_crop(tensor, 64, 0.875), one_step_crop),
    ):
        assert ours.shape == theirs.shape and ours.dtype == torch.uint8
        difference = (ours.int() - theirs.int()).abs()
        assert difference.float().mean() < 1.0 and difference.max() <= 8, (difference.float().mean(), difference.max())
