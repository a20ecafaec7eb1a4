"""Where an upright original image lands in the square model input, for each resize mode.

``crop``: the shorter side scaled to ``size / crop_fraction``, the centre ``size`` square kept;
``pad``: the whole image scaled to fit, centred on black (letterboxed); ``stretch``: both sides
scaled to ``size``, aspect ratio not kept. A point ``(x, y)`` of the original maps to
``(x * scale_x + offset_x, y * scale_y + offset_y)`` in the model input, so a model's output in
input pixels maps back with ``to_original``.
"""

from __future__ import annotations

from dataclasses import dataclass

from steps.imaging.codec import center_crop

RESIZE_MODES = ("crop", "pad", "stretch")


@dataclass(frozen=True)
class Placement:
    width: int  # the original image, upright (after EXIF orientation)
    height: int
    resized_width: int  # the image resized, before the crop or the padding
    resized_height: int
    left: int  # where the resized image's top-left corner lands in the input (negative: cropped off)
    top: int
    size: int

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.height

    def record(self) -> dict[str, float]:
        """The per-image ``meta`` record a user model gets."""
        return {
            "width": self.width,
            "height": self.height,
            "scale_x": self.scale_x,
            "scale_y": self.scale_y,
            "offset_x": float(self.left),
            "offset_y": float(self.top),
        }


def place(width: int, height: int, size: int, resize: str, crop_fraction: float = 1.0) -> Placement:
    """The placement of a ``width`` x ``height`` upright image in a ``size`` square input."""
    if resize == "crop":
        box = center_crop(width, height, size, crop_fraction)
        return Placement(width, height, box.width, box.height, -box.left, -box.top, size)
    if resize == "pad":
        scale = size / max(width, height)
        resized_width, resized_height = max(1, round(width * scale)), max(1, round(height * scale))
        return Placement(
            width,
            height,
            resized_width,
            resized_height,
            (size - resized_width) // 2,
            (size - resized_height) // 2,
            size,
        )
    if resize == "stretch":
        return Placement(width, height, size, size, 0, 0, size)
    raise ValueError(f"resize must be one of {RESIZE_MODES}, not {resize!r}")


def decode_side(size: int, resize: str, crop_fraction: float) -> int:
    """The side a reduced-size decode must keep for ``place`` (``steps.imaging.codec.decode``'s max_side)."""
    return round(size / crop_fraction) if resize == "crop" else size
