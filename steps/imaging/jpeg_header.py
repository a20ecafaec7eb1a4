"""What a JPEG's header says, read without decoding: enough to route it to a tensor decoder or not.

The tensor decoders (torchvision's ``decode_jpeg`` on CPU, nvJPEG on CUDA) take baseline and
progressive 8-bit JPEGs with one (gray) or three (YCbCr) components. Everything else (CMYK/YCCK,
12-bit, lossless or arithmetic-coded streams, files that do not end with an EOI marker, i.e.
interrupted uploads, and anything this reader cannot parse) goes to the Pillow path, which
decodes or rejects it with the reason Pillow gives; so rejects stay exactly as on the CPU path.

A small marker scanner rather than ``PIL.Image.open``: it runs for every image on the GPU path,
where ``Image.open`` + ``getexif`` (~80 µs of GIL-holding Python each) would cap a task near 10^4
images/s. Where it cannot be sure it matches Pillow (an XMP orientation, an Exif block it cannot
parse) it says so and the image takes the Pillow path.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

SOI, EOI = b"\xff\xd8", b"\xff\xd9"
# Huffman-coded baseline, extended sequential and progressive frames: what nvJPEG decodes.
TENSOR_FRAMES = {0xC0, 0xC1, 0xC2}
PROGRESSIVE_FRAME = 0xC2
OTHER_FRAMES = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
STANDALONE = {0x01, *range(0xD0, 0xD8)}
START_OF_SCAN = 0xDA
ORIENTATION_TAG = 0x0112
EXIF_PREFIX = b"Exif\x00\x00"
XMP_PREFIX = b"http://ns.adobe.com/xap/1.0/\x00"
ADOBE_PREFIX = b"Adobe"


@dataclass(frozen=True)
class JpegHeader:
    """A JPEG the tensor decoders can take: stored dimensions and EXIF orientation (1-8)."""

    width: int
    height: int
    components: int  # 1 (gray) or 3 (YCbCr)
    orientation: int
    progressive: bool = False  # SOF2: nvJPEG decodes it on its slow path (see tensor_decode.device_takes)

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) after the EXIF orientation: 5-8 swap them, as Pillow reports."""
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (self.width, self.height)


def _exif_orientation(block: bytes) -> int | None:
    """Orientation from a TIFF-structured Exif block (IFD0); 1 when absent; None when unreadable."""
    order = {b"II": "<", b"MM": ">"}.get(block[:2])
    if order is None or len(block) < 8:
        return None
    (offset,) = struct.unpack_from(order + "I", block, 4)
    if offset + 2 > len(block):
        return None
    (count,) = struct.unpack_from(order + "H", block, offset)
    for entry in range(offset + 2, min(offset + 2 + 12 * count, len(block) - 11), 12):
        tag, kind, _ = struct.unpack_from(order + "HHI", block, entry)
        if tag == ORIENTATION_TAG:
            if kind == 3:  # SHORT
                return struct.unpack_from(order + "H", block, entry + 8)[0]
            if kind == 4:  # LONG
                return struct.unpack_from(order + "I", block, entry + 8)[0]
            return None
    return 1


def _segments(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(marker, payload) of each header segment up to the first scan; stops early on malformed data."""
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in STANDALONE:
            position += 2
            continue
        (length,) = struct.unpack_from(">H", data, position + 2)
        segment = data[position + 4 : position + 2 + length]
        if length < 2 or len(segment) != length - 2:
            return
        yield marker, segment
        if marker == START_OF_SCAN:
            return
        position += 2 + length


def _frame(segment: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) of a start-of-frame a tensor decoder takes, else None."""
    if len(segment) < 6:
        return None
    precision, height, width, components = struct.unpack_from(">BHHB", segment)
    if precision != 8 or components not in (1, 3) or not width or not height:
        return None
    return width, height, components


def _for_pillow(marker: int, segment: bytes) -> bool:
    """Segments that mean a tensor decoder may decode the image differently from Pillow."""
    if marker in OTHER_FRAMES:
        return True  # lossless, arithmetic-coded, hierarchical
    if marker == 0xE1 and segment.startswith(XMP_PREFIX):
        return b"tiff:Orientation" in segment  # Pillow may take the orientation from XMP
    # Adobe colour transforms (RGB/YCCK/CMYK storage): libjpeg via Pillow knows them.
    return marker == 0xEE and segment.startswith(ADOBE_PREFIX)


def read_jpeg_header(data: bytes) -> JpegHeader | None:
    """The header of a JPEG that a tensor decoder can take, or None: route it to Pillow."""
    # Some writers pad the file with zeros after EOI; look at the tail only (no copy of the file).
    if not data.startswith(SOI) or not data[-64:].rstrip(b"\x00").endswith(EOI):
        return None
    frame, orientation, seen_exif, scanned, progressive = None, 1, False, False, False
    for marker, segment in _segments(data):
        if _for_pillow(marker, segment):
            return None
        if marker in TENSOR_FRAMES:
            frame = _frame(segment)
            progressive = marker == PROGRESSIVE_FRAME
        elif marker == 0xE1 and segment.startswith(EXIF_PREFIX) and not seen_exif:
            seen_exif = True  # Pillow reads the first Exif block only
            orientation = _exif_orientation(segment[len(EXIF_PREFIX) :])
            if orientation is None:
                return None
        scanned = marker == START_OF_SCAN
    if frame is None or not scanned or frame[0] * frame[1] > Image.MAX_IMAGE_PIXELS:
        return None  # the Pillow path decodes it or rejects it with its reason
    width, height, components = frame
    return JpegHeader(width, height, components, orientation if 1 <= orientation <= 8 else 1, progressive)
