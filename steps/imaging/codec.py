"""Decode an image once (at reduced size where the format allows), resize it to fit a box, encode it.

Decoding dominates the cost of preprocessing camera-size JPEGs. When the output is much smaller
than the input, libjpeg decodes at 1/2, 1/4 or 1/8 scale (DCT scaling, as ``Image.draft``), which
skips most of the inverse DCT and the full-size pixel buffer. The JPEGs a camera writes (8-bit
YCbCr or gray, baseline or progressive, per ``steps.imaging.jpeg_header``) are decoded by
libjpeg-turbo through simplejpeg, at the scale ``Image.draft`` picks and with the same
(accurate) IDCT and upsampling, so the pixels are Pillow's bit for bit; it takes the whole buffer
in one call, where Pillow feeds libjpeg 64 KB at a time and converts each row: ~15% less CPU
per 8 MP photo. Everything else, and anything simplejpeg refuses or warns about, takes Pillow,
as does every JPEG where simplejpeg is not installed (a bare image with torch and Pillow only).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from steps.errors import RejectedInput
from steps.imaging.jpeg_header import JpegHeader, read_jpeg_header
from steps.imaging.png import encode_gray_png

try:
    import simplejpeg
except ImportError:  # a dependency, but the GPU check's machine has torch and Pillow only: same pixels, more CPU
    simplejpeg = None

JPEG_QUALITY = 90
# PNGs other than 8-bit gray (edge maps have their own writer, steps.imaging.png): zlib level 1,
# not 6, which is only ~3% smaller for twice the encode time.
PNG_COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class Decoded:
    """A decoded image in ``RGB`` or ``L``, already upright; ``width``/``height`` are the
    original dimensions after EXIF orientation (before any reduced-size decode)."""

    image: Image.Image
    width: int
    height: int
    format: str


def fit_within(width: int, height: int, box: int) -> tuple[int, int]:
    """Dimensions that fit within ``box`` x ``box`` keeping aspect ratio; never upscales."""
    scale = min(1.0, box / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass(frozen=True)
class CenterCrop:
    """Resize to ``width`` x ``height`` (the shorter side to ``size / crop_fraction``), then keep
    the ``size`` square at ``left``, ``top``: 0.875 is the ImageNet evaluation transform
    (256 → 224), 1.0 TrainFlow's (the whole centred square, as ``ImageOps.fit``)."""

    width: int
    height: int
    left: int
    top: int
    size: int


def center_crop(width: int, height: int, size: int, crop_fraction: float) -> CenterCrop:
    side = round(size / crop_fraction)
    scale = side / min(width, height)
    resized_width, resized_height = max(side, round(width * scale)), max(side, round(height * scale))
    return CenterCrop(resized_width, resized_height, (resized_width - size) // 2, (resized_height - size) // 2, size)


def _to_display_mode(image: Image.Image) -> Image.Image:
    """RGB for colour (incl. CMYK, palette, alpha over white), L for single-channel."""
    if image.mode in ("RGB", "L"):
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = values.max() or 1.0
        return Image.fromarray((values * (255.0 / peak)).clip(0, 255).astype(np.uint8), "L")
    if image.mode in ("1", "LA"):
        return image.convert("L")
    if image.mode == "P" and "transparency" not in image.info:
        return image.convert("RGB")
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _too_large(detail: str) -> str:
    return f"image too large to decode safely ({detail}; limit {Image.MAX_IMAGE_PIXELS} pixels)"


def _open(data: bytes) -> Image.Image:
    """Open without decoding. A JPEG opens through its plugin, past ``Image.open``'s full-size bomb
    check, because ``decode`` checks the size it will actually decode (after ``draft``)."""
    if data[:3] == b"\xff\xd8\xff":
        return JpegImagePlugin.JpegImageFile(io.BytesIO(data))
    return Image.open(io.BytesIO(data))


# EXIF orientation → the transpose ``ImageOps.exif_transpose`` applies.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def draft_scale(width: int, height: int, max_side: int | None) -> int:
    """The reduction ``Image.draft`` picks for a ``max_side`` box: the largest of 8, 4, 2 and 1 that
    leaves both sides at least ``max_side``."""
    ratio = min(width // max_side, height // max_side) if max_side else 1
    return next((scale for scale in (8, 4, 2) if ratio >= scale), 1)


def _decode_turbo(data: bytes, header: JpegHeader, max_side: int | None) -> Decoded | None:
    """A camera JPEG through libjpeg-turbo at Pillow's draft scale, upright; None: let Pillow do it."""
    scale = draft_scale(header.width, header.height, max_side)
    width, height = -(-header.width // scale), -(-header.height // scale)  # libjpeg rounds up
    gray = header.components == 1
    try:
        # strict: a stream libjpeg only warns about (Pillow decodes it anyway) goes to Pillow too.
        pixels = simplejpeg.decode_jpeg(
            data, colorspace="GRAY" if gray else "RGB", min_width=width, min_height=height, strict=True
        )
    except ValueError:
        return None
    if pixels.shape[:2] != (height, width):
        return None
    image = Image.fromarray(pixels[..., 0] if gray else pixels)  # 2-D: "L", 3 channels: "RGB"
    transpose = _UPRIGHT.get(header.orientation)
    return Decoded(image if transpose is None else image.transpose(transpose), *header.upright_size, "JPEG")


def decode(data: bytes, max_side: int | None = None) -> Decoded:
    """Decode ``data``, upright, optionally at reduced scale when only ``max_side`` is needed.

    Raises RejectedInput with a one-line reason for anything that is not a readable image.
    """
    if not data:
        raise RejectedInput("empty file (0 bytes)")
    header = read_jpeg_header(data)
    if header is not None and simplejpeg is not None:
        decoded = _decode_turbo(data, header, max_side)
        if decoded is not None:
            return decoded
    try:
        image = _open(data)
        fmt = image.format or "unknown"
        orientation = image.getexif().get(0x0112, 1)
        # EXIF orientations 5-8 swap width and height.
        width, height = (image.height, image.width) if orientation in (5, 6, 7, 8) else image.size
        if max_side and fmt == "JPEG":
            image.draft(image.mode if image.mode in ("RGB", "L") else None, (max_side, max_side))
        # What will be decoded: a JPEG's reduced-size draft, so a huge photo that fits once reduced is
        # processed. An explicit check, not a warnings filter: filters are process-wide, not thread-safe.
        if image.width * image.height > Image.MAX_IMAGE_PIXELS:
            raise RejectedInput(_too_large(f"{image.width}x{image.height} pixels to decode"))
        image.load()
        image = ImageOps.exif_transpose(image)
    except UnidentifiedImageError as err:
        raise RejectedInput(f"not a recognised image format ({len(data)} bytes)") from err
    except Image.DecompressionBombError as err:  # Pillow's own check at open, for other formats
        raise RejectedInput(_too_large("at open")) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise RejectedInput(f"corrupt or truncated image data: {err}") from err
    return Decoded(_to_display_mode(image), width, height, fmt)


def resize_to_fit(image: Image.Image, box: int, original_size: tuple[int, int] | None = None) -> Image.Image:
    """Fit within ``box``. ``original_size``: the image's size before a reduced-size decode, so the
    output size does not depend on the DCT scale libjpeg picked (and matches the tensor path's)."""
    target = fit_within(*(original_size or image.size), box)
    if target == image.size:
        return image
    # reducing_gap first shrinks by an integer factor (cheap box filter), then filters the rest.
    return image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=False)
    elif fmt == "PNG" and image.mode == "L":
        return encode_gray_png(np.asarray(image))
    else:
        image.save(buffer, fmt, compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def thumbnail_jpeg(data: bytes, size: int = 160) -> bytes:
    """A small upright JPEG of ``data`` for the card (decoded at reduced scale)."""
    return encode(resize_to_fit(decode(data, max_side=size).image, size), "JPEG")
