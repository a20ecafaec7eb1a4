"""Model-only rows: how fast the model alone runs, the ceiling end to end is measured against."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision

from gpu.settings import CheckSettings
from gpu.table import Rows, images_per_second, timed_rate
from steps.inference.pipeline import Predictor
from steps.models.loading import DEFAULT_INPUT_SIZE, LoadedModel


def classifier(architecture: str) -> LoadedModel:
    """A fresh CPU copy of a random-weight torchvision model (Predictor moves its module in place)."""
    module = getattr(torchvision.models, architecture)(weights=None).eval()
    return LoadedModel(
        module,
        f"{architecture} (random init)",
        "torchvision",
        architecture,
        [str(i) for i in range(1000)],
        DEFAULT_INPUT_SIZE,
    )


def model_only(settings: CheckSettings, device: torch.device, rows: Rows, sync: Callable[[], None]) -> float:
    """The model rows: channels-last eager bf16 and fp16, a CUDA graph, ``torch.compile``, then
    ``Predictor`` (the pipeline's model stage: uint8 in, normalise, top-5 out), whose rate it returns."""
    predictor = Predictor(classifier(settings.architecture), device, top_k=5)  # channels-last on CUDA
    cuda = device.type == "cuda"
    size, batch = DEFAULT_INPUT_SIZE, settings.batch_size
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    pixels = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)

    def eager(dtype: torch.dtype, module: Callable[[torch.Tensor], object] = predictor.module) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=cuda):
                module(x)

        return run

    def rate_of(run: Callable[[], None]) -> Callable[[], float]:
        return lambda: timed_rate(run, batch, settings.seconds, sync)

    def cuda_graph() -> float:
        if not cuda:
            raise RuntimeError("no CUDA device")
        run = eager(torch.bfloat16)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                run()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run()
        return rate_of(graph.replay)()

    def compiled() -> float:
        if settings.smoke:
            raise RuntimeError("skipped in --smoke (minutes of compilation)")
        return rate_of(eager(torch.bfloat16, torch.compile(predictor.module, mode="reduce-overhead")))()

    rates = [
        rows.attempt("model only: eager bf16, channels-last", rate_of(eager(torch.bfloat16))),
        rows.attempt("model only: eager fp16, channels-last", rate_of(eager(torch.float16))),
        rows.attempt("model only: CUDA graph of eager bf16", cuda_graph),
        rows.attempt("model only: torch.compile reduce-overhead bf16", compiled),
    ]
    ceiling = max((rate for rate in rates if rate is not None), default=0.0)
    rate = rate_of(lambda: predictor(pixels))()
    ratio = f"{rate / ceiling:.2f} of the best model-only row" if ceiling else ""
    rows.append(("model only: Predictor (uint8 in, normalise, top-5 out)", images_per_second(rate), ratio))
    return rate
