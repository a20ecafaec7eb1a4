import io

import numpy as np
import pytest
from PIL import Image

from steps.errors import RejectedInput
from steps.imaging.codec import decode, fit_within
from steps.imaging.edges import sobel_edges
from steps.preprocess.image import preprocess_image


def jpeg(image: Image.Image, **save_args: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, **save_args)
    return buffer.getvalue()


def left_red_right_blue(width: int = 400, height: int = 200) -> Image.Image:
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(pixels)


def test_fit_within_keeps_aspect_and_never_upscales() -> None:
    assert fit_within(4000, 3000, 256) == (256, 192)
    assert fit_within(3000, 4000, 256) == (192, 256)
    assert fit_within(100, 50, 256) == (100, 50)


@pytest.mark.parametrize(("orientation", "stored"), [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)])
def test_exif_orientation_is_applied(orientation: int, stored: Image.Transpose) -> None:
    upright = left_red_right_blue()
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode(jpeg(upright.transpose(stored), exif=exif.tobytes()))
    assert (decoded.width, decoded.height) == (400, 200)
    assert decoded.image.size == (400, 200)
    left, right = decoded.image.getpixel((20, 100)), decoded.image.getpixel((380, 100))
    assert left[0] > 200 and left[2] < 60  # red stays on the left
    assert right[2] > 200 and right[0] < 60


def test_large_jpeg_uses_reduced_size_decode() -> None:
    big = left_red_right_blue(4000, 3000)
    decoded = decode(jpeg(big), max_side=256)
    assert (decoded.width, decoded.height) == (4000, 3000)  # original size is reported
    assert decoded.image.width == 500  # libjpeg decoded at 1/8 scale
    assert preprocess_image(jpeg(big), 256).width == 4000


def test_cmyk_jpeg_becomes_correct_rgb() -> None:
    cmyk = Image.new("RGB", (64, 64), (200, 30, 30)).convert("CMYK")
    decoded = decode(jpeg(cmyk))
    assert decoded.image.mode == "RGB"
    r, g, b = decoded.image.getpixel((32, 32))
    assert r > 150 and g < 80 and b < 80


def test_png_with_alpha_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    buffer = io.BytesIO()
    rgba.save(buffer, "PNG")
    decoded = decode(buffer.getvalue())
    assert decoded.format == "PNG" and decoded.image.mode == "RGB"
    assert decoded.image.getpixel((5, 5)) == (255, 255, 255)


def test_grayscale_stays_single_channel() -> None:
    out = preprocess_image(jpeg(Image.new("L", (600, 300), 128)), 256)
    resized = Image.open(io.BytesIO(out.resized_jpeg))
    assert resized.mode == "L" and resized.size == (256, 128)


def test_outputs_are_a_jpeg_within_box_and_a_png_edge_map() -> None:
    out = preprocess_image(jpeg(left_red_right_blue(1000, 500)), 256)
    resized = Image.open(io.BytesIO(out.resized_jpeg))
    edges = Image.open(io.BytesIO(out.edges_png))
    assert (resized.format, resized.size) == ("JPEG", (256, 128))
    assert (edges.format, edges.mode, edges.size) == ("PNG", "L", (256, 128))


def test_preprocessing_is_deterministic() -> None:
    data = jpeg(left_red_right_blue(1000, 500))
    assert preprocess_image(data, 128) == preprocess_image(data, 128)


def test_sobel_marks_the_boundary_and_nothing_else() -> None:
    edges = np.asarray(sobel_edges(left_red_right_blue(40, 20)))
    assert edges[:, 19:21].min() > 100
    assert edges[:, :15].max() == 0 and edges[:, 25:].max() == 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"hello, not an image", "not a recognised image format"),
        (jpeg(left_red_right_blue())[:600], "corrupt or truncated"),
    ],
)
def test_bad_bytes_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(RejectedInput, match=reason):
        preprocess_image(data, 64)


def test_oversized_image_is_rejected_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(RejectedInput, match=r"too large to decode safely \(40x40 pixels to decode; limit 1000 pix"):
        decode(jpeg(Image.new("RGB", (40, 40))))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_reject_for_size_quotes_one_limit(monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    buffer = io.BytesIO()
    Image.new("RGB", (100, 100)).save(buffer, fmt)  # 10x the limit: Pillow's own open check fires for PNG
    with pytest.raises(RejectedInput) as rejected:
        decode(buffer.getvalue(), max_side=None)
    reason = str(rejected.value)
    assert "limit 1000 pixels" in reason and "2000" not in reason and "exceeds" not in reason


def test_a_jpeg_that_fits_once_reduced_is_processed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    big = jpeg(Image.new("RGB", (160, 160), (10, 200, 30)))  # 25,600 pixels, over 2x the limit
    with pytest.raises(RejectedInput, match="160x160 pixels to decode"):
        decode(big)  # full size: too large
    decoded = decode(big, max_side=40)  # draft decodes at 1/4 scale: 40x40 = 1,600 pixels
    assert (decoded.width, decoded.height) == (160, 160) and max(decoded.image.size) <= 80
    result = preprocess_image(big, 32)
    assert max(Image.open(io.BytesIO(result.resized_jpeg)).size) == 32
