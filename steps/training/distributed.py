"""Data-parallel training on one machine: N rank processes under torch.distributed, watched by the task.

The task process loads the images once and spawns the ranks (torch.multiprocessing, start method
``spawn``: safe with CUDA); the images reach them through shared memory. The ranks meet through a
file rendezvous in a private temporary folder (no port to race for) and talk over the loopback
interface: gloo on CPU, NCCL between GPUs (rank r on GPU r). The task then only watches:

- a rank that dies (SIGKILL, OOM kill) ends the wait at once; the others are stopped within a few
  seconds and the task fails with ``RankLost``, a transient failure, so @retry resumes from the
  last checkpoint (rank 0 wrote it atomically; every rank restores from it);
- a rank that raises a deterministic error (bad configuration, a bug) fails the task with
  ``RankFailed``, which is not retried, as in one process;
- a spot notice seen by the task (``stop``) is passed on to rank 0, which stops every rank after
  the step in flight and checkpoints;
- rank 0's events come back through a pipe and reach ``on_event`` in the task process.

If the task itself is killed the ranks get a signal from the kernel (torch sets PR_SET_PDEATHSIG)
and exit, so no orphan goes on writing checkpoints.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import tempfile
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp
from torch.multiprocessing.spawn import ProcessException

from steps.errors import ConfigError, SpotInterruption
from steps.io.storage import open_storage
from steps.progress import log
from steps.spot import is_transient
from steps.training.checkpoints import CheckpointStore
from steps.training.collective import TorchGroup
from steps.training.config import TrainConfig, check_images_per_rank
from steps.training.data import Dataset
from steps.training.determinism import make_deterministic
from steps.training.events import TrainingCallback
from steps.training.loop import FitResult, StopSignal, fit

RESULT_FILE = "result.pt"
# After one rank fails, how long the others get to exit on their own (their collectives fail
# as soon as a peer is gone) before they are terminated.
GRACE_S = 3.0


class RankLost(SpotInterruption):
    """A rank died or failed transiently: like a lost instance, a retry resumes from the last checkpoint."""


class RankFailed(RuntimeError):
    """A rank raised a deterministic error: another attempt would fail the same way."""


def world_size_for(processes: int, batch_size: int) -> int:
    """``--processes``, or with 0 one rank per visible GPU (else 1); checked against the GPUs and batch."""
    gpus = torch.cuda.device_count()
    world = processes or max(1, gpus)
    if gpus and world > gpus:
        raise ConfigError("--processes", processes, f"at most the {gpus} visible GPUs", "pass a smaller --processes")
    check_images_per_rank(world, batch_size)
    return world


def loopback_interface() -> str:
    """The loopback interface's name (``lo`` on Linux, ``lo0`` on macOS): ranks talk only over it."""
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    return names[0] if names else "lo"


@dataclass(frozen=True)
class RankJob:
    """What every rank is given (pickled to it at spawn; tensors travel as shared memory)."""

    cfg: TrainConfig
    data: Dataset
    run_dir: str
    world_size: int
    workdir: str
    notice: Event
    events: Connection


def rank_main(rank: int, job: RankJob) -> None:
    """One rank: join the group, train in lock step with the others; rank 0 leaves the result."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback_interface())
    os.environ.setdefault("NCCL_SOCKET_IFNAME", loopback_interface())
    if rank != 0:
        job.events.close()
    cuda = torch.cuda.is_available()
    device, backend = (torch.device("cuda", rank), "nccl") if cuda else (torch.device("cpu"), "gloo")
    make_deterministic(device)  # before CUDA starts: cuBLAS reads its workspace setting then
    if cuda:
        torch.cuda.set_device(rank)
    else:
        # Share the cores: N ranks each using all of them would thrash.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // job.world_size))
    workdir = Path(job.workdir)
    dist.init_process_group(
        backend, init_method=f"file://{workdir / 'rendezvous'}", rank=rank, world_size=job.world_size
    )
    try:
        cfg = job.cfg
        result = fit(
            cfg,
            job.data,
            CheckpointStore(open_storage(cfg.checkpoint_root), job.run_dir, cfg.keep_last),
            group=TorchGroup(device),
            device=device,
            stop=job.notice if rank == 0 else None,
            on_event=job.events.send if rank == 0 else None,
        )
        if rank == 0:
            partial = workdir / f"{RESULT_FILE}.partial"
            torch.save(asdict(result), partial)
            os.replace(partial, workdir / RESULT_FILE)
    except Exception as error:
        report = {"error": f"{error.__class__.__name__}: {error}", "transient": is_transient(error)}
        (workdir / f"failure-{rank}.json").write_text(json.dumps(report))
        raise
    finally:
        dist.destroy_process_group()


def relay(events: Connection, on_event: TrainingCallback | None) -> None:
    """Hand on the events rank 0 has sent so far (always read them: a full pipe would block it)."""
    while events.poll():
        try:
            event = events.recv()
        except EOFError:  # rank 0 has gone; its process exit is handled by the caller
            return
        if on_event is not None:
            on_event(event)


def rank_failure(error: ProcessException, ranks: torch_mp.ProcessContext, workdir: Path) -> Exception:
    """The task's error for a failed group: transient (retry) unless a rank hit a deterministic error."""
    codes = [process.exitcode for process in ranks.processes]
    first = codes[error.error_index]
    # Signal deaths other than the SIGTERM the cleanup sends are causes, not consequences.
    killed = [r for r, c in enumerate(codes) if c is not None and c < 0 and (r == error.error_index or c != -15)]
    if killed:
        name = signal.Signals(-codes[killed[0]]).name
        return RankLost(f"rank {killed[0]} of {len(codes)} was killed ({name}); the retry resumes from its checkpoint")
    reports = {
        rank: json.loads(path.read_text())
        for rank in range(len(codes))
        if (path := workdir / f"failure-{rank}.json").exists()
    }
    transient = [rank for rank, report in reports.items() if report["transient"]]
    if transient or not reports:
        rank = transient[0] if transient else error.error_index
        what = reports[rank]["error"] if transient else f"exited with code {first}"
        return RankLost(f"rank {rank}: {what}; the retry resumes from the last checkpoint")
    if isinstance(error, torch_mp.ProcessRaisedException):
        log(str(error).strip())  # the rank's traceback
    rank = error.error_index if error.error_index in reports else min(reports)
    return RankFailed(f"rank {rank}: {reports[rank]['error']}")


def fit_on_ranks(
    cfg: TrainConfig,
    data: Dataset,
    run_dir: str,
    world_size: int,
    *,
    stop: StopSignal | None = None,
    on_event: TrainingCallback | None = None,
) -> FitResult:
    """Train with ``world_size`` data-parallel ranks; raise RankLost/RankFailed if any rank fails."""
    context = multiprocessing.get_context("spawn")
    notice = context.Event()
    events_in, events_out = context.Pipe(duplex=False)
    with tempfile.TemporaryDirectory(prefix="spot-batch-ranks-") as workdir:
        job = RankJob(cfg, data, run_dir, world_size, workdir, notice, events_out)
        ranks = torch_mp.start_processes(rank_main, args=(job,), nprocs=world_size, join=False, start_method="spawn")
        events_out.close()  # the ranks hold their copies; EOF once rank 0 is gone
        try:
            while not ranks.join(timeout=0.1, grace_period=GRACE_S):
                if stop is not None and stop.is_set():
                    notice.set()
                relay(events_in, on_event)
        except ProcessException as error:
            relay(events_in, on_event)
            raise rank_failure(error, ranks, Path(workdir)) from None
        finally:
            # Whatever ended the wait (a failed rank, or an error in on_event), no rank outlives it.
            for process in ranks.processes:
                if process.is_alive():
                    process.kill()
                    process.join()
        relay(events_in, on_event)
        result = Path(workdir) / RESULT_FILE
        if not result.exists():
            raise RankLost("rank 0 exited without a result (interrupted); the retry resumes from the last checkpoint")
        return FitResult(**torch.load(result, weights_only=True))
