"""One image through preprocessing: decode once, resize, edge map, encode both."""

from __future__ import annotations

from dataclasses import dataclass

from steps.imaging.codec import decode, encode, resize_to_fit
from steps.imaging.edges import sobel_edges


@dataclass(frozen=True)
class Preprocessed:
    resized_jpeg: bytes
    edges_png: bytes
    width: int
    height: int


def preprocess_image(data: bytes, size: int) -> Preprocessed:
    """Decode once; return the resized JPEG and the Sobel edge PNG of the resized image."""
    decoded = decode(data, max_side=size)
    resized = resize_to_fit(decoded.image, size, (decoded.width, decoded.height))
    return Preprocessed(encode(resized, "JPEG"), encode(sobel_edges(resized), "PNG"), decoded.width, decoded.height)
