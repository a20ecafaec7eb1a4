"""Decode JPEGs to upright uint8 tensors on a device, a batch at a time.

One implementation for both devices: ``torchvision.io.decode_jpeg`` with a list decodes on CPU
(libjpeg-turbo; how it is tested) or, with ``device="cuda"``, in one batched nvJPEG call (the
hardware decoder on A100/H100). One bad image fails a whole batched call, so a failed batch is
retried image by image, and an image the decoder still refuses comes back as None: its caller
sends it down the Pillow path, which decodes or rejects it exactly as the CPU pipeline does.

nvJPEG ignores EXIF orientation, so it is read from the header on the CPU (``jpeg_header``) and
applied to the tensor here, the same way ``PIL.ImageOps.exif_transpose`` does.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from steps.imaging.jpeg_header import JpegHeader

# torchvision 0.29 deprecates its codecs in favour of TorchCodec (one warning per call); the
# device image (torchvision 0.26) has none. Installed once at import: filters are process-wide.
warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision", DeprecationWarning)
# The decoders only read their input, so a read-only view of the bytes is safe (and saves a copy).
warnings.filterwarnings("ignore", "The given buffer is not writable", UserWarning)

RGB = ImageReadMode.RGB  # inference: always three channels, like Pillow's convert("RGB")
AS_STORED = ImageReadMode.UNCHANGED  # preprocessing: gray stays one channel, like Pillow's "L"


# EXIF orientation → what ``ImageOps.exif_transpose`` does to make it upright, on (C, H, W).
_UPRIGHT: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    2: lambda image: image.flip(-1),
    3: lambda image: image.rot90(2, (-2, -1)),
    4: lambda image: image.flip(-2),
    5: lambda image: image.transpose(-2, -1),
    6: lambda image: image.rot90(-1, (-2, -1)),
    7: lambda image: image.rot90(2, (-2, -1)).transpose(-2, -1),
    8: lambda image: image.rot90(1, (-2, -1)),
}


def upright(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """``image`` (C, H, W) transposed as ``ImageOps.exif_transpose`` does for EXIF ``orientation``."""
    transform = _UPRIGHT.get(orientation)
    return image if transform is None else transform(image)


def _decode_each(tensors: list[torch.Tensor], mode: ImageReadMode, device: torch.device) -> list[torch.Tensor | None]:
    decoded: list[torch.Tensor | None] = []
    for tensor in tensors:
        try:
            decoded.append(decode_jpeg(tensor, mode=mode, device=device))
        except RuntimeError:
            decoded.append(None)
    return decoded


def decode_jpegs(
    datas: Sequence[bytes], headers: Sequence[JpegHeader], device: torch.device, mode: ImageReadMode = RGB
) -> list[torch.Tensor | None]:
    """Upright uint8 (C, H, W) tensors on ``device``; None where the decoder refused the image.

    A decoded size that disagrees with the header also counts as refused: nvJPEG can return
    garbage for some corrupt streams instead of failing.
    """
    if not datas:
        return []
    tensors = [torch.frombuffer(data, dtype=torch.uint8) for data in datas]
    try:
        decoded: list[torch.Tensor | None] = list(decode_jpeg(tensors, mode=mode, device=device))
    except RuntimeError:
        decoded = _decode_each(tensors, mode, device)
    results: list[torch.Tensor | None] = []
    for image, header in zip(decoded, headers, strict=True):
        if image is None or tuple(image.shape[-2:]) != (header.height, header.width):
            results.append(None)
        else:
            results.append(upright(image, header.orientation))
    return results
