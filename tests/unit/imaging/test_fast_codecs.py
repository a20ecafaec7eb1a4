"""The fast codecs give Pillow's results: libjpeg-turbo decodes (simplejpeg) and the edge-map PNG writer."""

import io
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
from PIL import Image, ImageOps

from steps.imaging import codec
from steps.imaging.codec import decode, draft_scale, encode
from steps.imaging.png import encode_gray_png


def photo_like(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Smooth colour regions plus per-pixel noise, so every DCT coefficient band carries data."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8))
    pixels = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    pixels = pixels + rng.integers(-10, 11, pixels.shape, dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert(mode)


def jpeg(image: Image.Image, orientation: int = 1, **save_args: object) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, exif=exif.tobytes(), **save_args)
    return buffer.getvalue()


def pillow_decode(data: bytes, max_side: int | None) -> Image.Image:
    """What the Pillow path does: draft at the box, load, upright."""
    image = Image.open(io.BytesIO(data))
    if max_side:
        image.draft(image.mode, (max_side, max_side))
    image.load()
    return ImageOps.exif_transpose(image)


@pytest.fixture
def turbo_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Records each image simplejpeg decoded (to tell the fast path from the Pillow one)."""
    calls: list[bytes] = []
    real = simplejpeg.decode_jpeg

    def recording(data: bytes, **kwargs: object) -> np.ndarray:
        calls.append(data)
        return real(data, **kwargs)

    monkeypatch.setattr(codec.simplejpeg, "decode_jpeg", recording)
    return calls


def test_without_simplejpeg_pillow_decodes_every_jpeg_to_the_same_pixels(
    tmp_path: Path, turbo_calls: list[bytes]
) -> None:
    data = jpeg(photo_like(1200, 900), orientation=6)
    (tmp_path / "photo.jpg").write_bytes(data)
    script = (
        "import sys\n"
        "sys.modules['simplejpeg'] = None  # import simplejpeg raises ImportError, as where it is not installed\n"
        "from steps.imaging import codec\n"
        "assert codec.simplejpeg is None\n"
        f"decoded = codec.decode(open({str(tmp_path / 'photo.jpg')!r}, 'rb').read(), 256)\n"
        "sys.stdout.buffer.write(decoded.image.tobytes())\n"
    )
    without = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout
    assert without == decode(data, 256).image.tobytes()
    assert turbo_calls == [data]  # here, simplejpeg decoded it


def test_draft_scale_is_pillows_choice() -> None:
    for width, height, box in [(4000, 3000, 256), (1100, 700, 256), (600, 500, 256), (300, 260, 256), (90, 40, 64)]:
        image = Image.open(io.BytesIO(jpeg(Image.new("RGB", (width, height)))))
        image.draft("RGB", (box, box))
        scale = draft_scale(width, height, box)
        assert image.size == (-(-width // scale), -(-height // scale)), (width, height, box)
    assert draft_scale(4000, 3000, None) == 1


SIZES = [(2100, 1300), (1100, 700), (600, 530), (300, 260)]  # 1/8, 1/4, 1/2 and full scale at 256
ENCODINGS = [
    *itertools.product(["4:4:4", "4:2:2", "4:2:0"], [False], ["RGB"]),
    ("4:2:0", True, "RGB"),  # progressive
    ("4:2:0", False, "L"),  # gray: one component, no subsampling
    ("4:2:0", True, "L"),
]


@pytest.mark.parametrize(
    ("size", "subsampling", "progressive", "mode"),
    [(size, *encoding) for size in SIZES for encoding in ENCODINGS],
)
def test_camera_jpegs_decode_bit_identical_to_pillow(
    size: tuple[int, int], subsampling: str, progressive: bool, mode: str, turbo_calls: list[bytes]
) -> None:
    data = jpeg(photo_like(*size, mode=mode), subsampling=subsampling, progressive=progressive)
    decoded = decode(data, max_side=256)
    reference = pillow_decode(data, 256)
    assert turbo_calls == [data]  # the fast path decoded it, not Pillow
    assert (decoded.image.mode, decoded.image.size) == (reference.mode, reference.size)
    assert np.array_equal(np.asarray(decoded.image), np.asarray(reference))
    assert (decoded.width, decoded.height, decoded.format) == (*size, "JPEG")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_as_pillow_does(orientation: int, turbo_calls: list[bytes]) -> None:
    data = jpeg(photo_like(1200, 700, seed=orientation), orientation)
    for max_side in (None, 256):
        decoded = decode(data, max_side=max_side)
        reference = pillow_decode(data, max_side)
        assert np.array_equal(np.asarray(decoded.image), np.asarray(reference)), max_side
        swapped = orientation in (5, 6, 7, 8)
        assert (decoded.width, decoded.height) == ((700, 1200) if swapped else (1200, 700))
    assert len(turbo_calls) == 2


def test_a_stream_libjpeg_only_warns_about_is_decoded_as_pillow_does(turbo_calls: list[bytes]) -> None:
    data = bytearray(jpeg(photo_like(640, 480)))
    scan = data.index(b"\xff\xda")
    data[scan + 400 : scan + 440] = bytes(40)  # damaged entropy-coded data; the file still ends with EOI
    decoded = decode(bytes(data), max_side=256)
    assert turbo_calls == [bytes(data)]  # tried, refused (strict), then Pillow decoded it
    assert np.array_equal(np.asarray(decoded.image), np.asarray(pillow_decode(bytes(data), 256)))


def test_cmyk_jpegs_skip_the_fast_path(turbo_calls: list[bytes]) -> None:
    decoded = decode(jpeg(Image.new("RGB", (64, 64), (200, 30, 30)).convert("CMYK")))
    assert decoded.image.mode == "RGB" and turbo_calls == []


@pytest.mark.parametrize(
    "pixels",
    [
        np.random.default_rng(0).integers(0, 256, (171, 256), dtype=np.uint8),
        np.zeros((5, 7), np.uint8),
        np.full((3, 1), 255, np.uint8),
        np.tile(np.arange(256, dtype=np.uint8), (2, 1)),
    ],
    ids=["noise", "zeros", "one column", "ramp"],
)
def test_gray_png_round_trips_exactly(pixels: np.ndarray) -> None:
    png = encode_gray_png(pixels)
    image = Image.open(io.BytesIO(png))
    image.load()
    assert (image.format, image.mode, image.size) == ("PNG", "L", pixels.shape[::-1])
    assert np.array_equal(np.asarray(image), pixels)
    Image.open(io.BytesIO(png)).verify()  # chunk CRCs


def test_gray_png_is_as_small_as_pillows_on_an_edge_map() -> None:
    from steps.imaging.edges import sobel_edges

    edges = sobel_edges(photo_like(256, 171))
    ours = encode(edges, "PNG")
    pillows = io.BytesIO()
    edges.save(pillows, "PNG", compress_level=1)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(ours))), np.asarray(edges))
    assert len(ours) <= 1.05 * len(pillows.getvalue())


def test_gray_png_wants_2d_uint8() -> None:
    with pytest.raises(ValueError, match="2-D uint8"):
        encode_gray_png(np.zeros((4, 4, 3), np.uint8))
