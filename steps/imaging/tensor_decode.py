"""Decode JPEGs to upright uint8 tensors on a device, a batch at a time.

One implementation for both devices: ``torchvision.io.decode_jpeg`` with a list decodes on CPU
(libjpeg-turbo; how it is tested) or, with ``device="cuda"``, in one batched nvJPEG call (the
hardware decoder on A100/H100). One bad image fails a whole batched call, so a failed batch is
retried image by image, and an image the decoder still refuses comes back as None: its caller
sends it down the Pillow path, which decodes or rejects it exactly as the CPU pipeline does.

nvJPEG ignores EXIF orientation, so it is read from the header on the CPU (``jpeg_header``) and
applied to the tensor here, the same way ``PIL.ImageOps.exif_transpose`` does.

``device_takes`` says which images go to the device at all: progressive JPEGs stay on the CPU
with CUDA (nvJPEG decodes them on its slow path: Huffman decoding on the CPU and a sync per
image, under torchvision's global decoder lock), and nothing goes to a device whose decoder
failed its one-time probe (a torchvision built without nvJPEG), which is said once on stderr.
"""

from __future__ import annotations

import functools
import io
import sys
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


@functools.cache
def decoder_available(device: torch.device) -> bool:
    """Whether ``decode_jpeg`` works on ``device``: one tiny decode, once per device and process.

    When it does not, says so once, loudly, on stderr: every image then takes the Pillow path,
    which is correct but decodes on the CPU at a fraction of the device's rate.
    """
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 200)).save(buffer, "JPEG")
    try:
        decode_jpeg(torch.frombuffer(buffer.getvalue(), dtype=torch.uint8), mode=RGB, device=device)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        print(
            f"spot-batch: WARNING: JPEG decoding on {device} is unavailable ({reason}); every image is "
            "decoded by Pillow on the CPU instead, far slower. Install a torchvision built with nvJPEG "
            "(the CUDA wheels are), or decode on the CPU knowingly (--decode cpu, --device cpu).",
            file=sys.stderr,
            flush=True,
        )
        return False
    return True


def device_takes(header: JpegHeader | None, device: torch.device) -> bool:
    """Whether an image with this header is decoded on ``device``; otherwise the Pillow path takes it."""
    if header is None or (header.progressive and device.type == "cuda"):
        return False
    return decoder_available(device)


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
