"""One worker process per GPU for a task with several: each device's lane in a process of its own.

Lanes as threads of one process share one GIL (reads, headers, collation and the model's Python
all hold it), and torchvision's CUDA ``decode_jpeg`` keeps one global decoder: every call for
another device than the last rebuilds it (leaking the old one's buffers) under a global lock,
which with 2+ GPUs and ``--decode gpu|auto`` happens on every slice. A process per GPU gives
each device its own GIL, its own decoder and its own CUDA context.

A worker only predicts: it runs ``lane_tables`` (the same code as a thread lane) over its
share of the chunks and sends each chunk's table back in order; the task's main process
commits them, so exactly-once is the same as with threads. Workers are spawned (CUDA cannot
be forked), take the model as its saved bytes where pickling cannot carry it (TorchScript),
and are ended by ``close``. A failure in a worker fails the task with the worker's traceback.
"""

from __future__ import annotations

import io
import multiprocessing
import queue
import traceback
from collections.abc import Sequence
from dataclasses import replace

import pyarrow as pa
import torch

from steps.inference.tasks import ClassifyTask

_POLL_SECONDS = 5.0  # how often a waiting consumer checks that its worker is still alive


def _portable(task: ClassifyTask) -> tuple[ClassifyTask, bytes | None]:
    """``task`` as pickling can carry it: a TorchScript module goes as its ``torch.jit.save`` bytes."""
    if not isinstance(task.model.module, torch.jit.ScriptModule):
        return task, None
    buffer = io.BytesIO()
    torch.jit.save(task.model.module, buffer)
    return replace(task, model=replace(task.model, module=torch.nn.Identity())), buffer.getvalue()


def _restored(portable: tuple[ClassifyTask, bytes | None]) -> ClassifyTask:
    task, saved = portable
    if saved is None:
        return task
    return replace(task, model=replace(task.model, module=torch.jit.load(io.BytesIO(saved), map_location="cpu").eval()))


def _work(job: tuple, results: object) -> None:
    """The worker process: predict the job's chunks on its device, sending ("table", table, model
    seconds) per chunk, or ("error", traceback, seconds) once."""
    settings, portable, device, chunks = job
    from steps.inference.shard import lane_tables

    seconds = 0.0
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)  # this process's decoder and allocations on its own GPU
        task = _restored(portable)
        [runner] = task.runners([device])
        for table in lane_tables(settings, task, runner, chunks):
            seconds = runner.seconds
            results.put(("table", table, seconds))
    except BaseException:  # noqa: BLE001 - sent to the task's main process, which raises it
        results.put(("error", traceback.format_exc(), seconds))


class ProcessLane:
    """The tables of one device's chunks, in order, predicted in a spawned worker process."""

    def __init__(
        self, settings: object, task: ClassifyTask, device: torch.device, chunks: Sequence[Sequence[str]]
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.device = device
        self.model_seconds = 0.0  # the worker's runner seconds, as of its last table
        self._results = context.Queue(maxsize=2)  # a chunk ahead, like a thread lane's Prefetcher
        chunk_lists = [list(chunk) for chunk in chunks]
        self._process = context.Process(
            target=_work,
            args=((settings, _portable(task), device, chunk_lists), self._results),
            name=f"spot-batch-lane-{device}",
            daemon=True,
        )
        self._process.start()

    def __iter__(self) -> ProcessLane:
        return self

    def __next__(self) -> pa.Table:
        while True:
            try:
                kind, payload, self.model_seconds = self._results.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not self._process.is_alive():
                    raise RuntimeError(
                        f"the inference worker for {self.device} ended (exit code {self._process.exitcode}) "
                        "before its chunks were done"
                    ) from None
                continue
            if kind == "error":
                raise RuntimeError(f"the inference worker for {self.device} failed:\n{payload}")
            return payload

    def close(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=30)
        self._results.close()
