"""Data-parallel training: N rank processes under torch.distributed on this machine, watched by the task;
with a gang of K machines (``steps.training.nodes``) each machine's task runs N of the K x N ranks.

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

In a gang the task loads only its node's slice of the input (``steps.training.gang_inputs``), the
ranks meet through the main node's store instead of a file, and a rank whose
collective failed because another node went away, or a node the watch finds silent, fails the
task with ``RankLost``: the gang's retry resumes from rank 0's checkpoint.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import tempfile
from dataclasses import asdict, dataclass
from datetime import timedelta
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
from steps.training.events import CheckpointWritten, Resumed, TrainingCallback, TrainingEvent
from steps.training.loop import FitResult, StopSignal, fit
from steps.training.nodes import COLLECTIVE_TIMEOUT_S, Gang, NodeWatch, is_peer_loss

RESULT_FILE = "result.pt"
# After one rank fails, how long the others get to exit on their own (their collectives fail
# as soon as a peer is gone) before they are terminated.
GRACE_S = 3.0


class RankLost(SpotInterruption):
    """A rank died or failed transiently: like a lost instance, a retry resumes from the last checkpoint."""


class RankFailed(RuntimeError):
    """A rank raised a deterministic error: another attempt would fail the same way."""


def ranks_per_node(processes: int, batch_size: int, nodes: int = 1) -> int:
    """``--processes``, or with 0 one rank per visible GPU (else 1); checked against the GPUs and
    the batch (split across ``nodes`` x that many ranks)."""
    gpus = torch.cuda.device_count()
    ranks = processes or max(1, gpus)
    if gpus and ranks > gpus:
        raise ConfigError("--processes", processes, f"at most the {gpus} visible GPUs", "pass a smaller --processes")
    check_images_per_rank(ranks * nodes, batch_size)
    return ranks


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
    local_ranks: int
    workdir: str
    notice: Event
    events: Connection
    gang: Gang | None = None  # None: every rank on this machine

    @property
    def world_size(self) -> int:
        return self.local_ranks * (self.gang.num_nodes if self.gang else 1)

    def global_rank(self, local_rank: int) -> int:
        return (self.gang.node_index if self.gang else 0) * self.local_ranks + local_rank


def join_group(job: RankJob, rank: int, backend: str) -> None:
    """Meet the other ranks: a file in the task's folder, or the gang's store at the main node."""
    if job.gang is None or job.gang.on_loopback:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback_interface())
        os.environ.setdefault("NCCL_SOCKET_IFNAME", loopback_interface())
    if job.gang is None:
        init = {"init_method": f"file://{Path(job.workdir) / 'rendezvous'}"}
    else:
        init = {"store": job.gang.store(), "timeout": timedelta(seconds=COLLECTIVE_TIMEOUT_S)}
    dist.init_process_group(backend, rank=rank, world_size=job.world_size, **init)


def node_log(job: RankJob, rank: int) -> TrainingCallback:
    """A log line per checkpoint and resume from a node other than 0 (rank 0 logs the events)."""
    where = f"node {job.gang.node_index} of {job.gang.num_nodes} (ranks {rank}-{rank + job.local_ranks - 1})"

    def line(event: TrainingEvent) -> None:
        if isinstance(event, CheckpointWritten):
            log(f"{where}: past the barrier after checkpoint {event.uri}, step {event.step}")
        elif isinstance(event, Resumed):
            log(f"{where}: resumed from {event.uri} ({event.source}): step {event.step}, epoch {event.epoch}")

    return line


def rank_main(local_rank: int, job: RankJob) -> None:
    """One rank: join the group, train in lock step with the others; rank 0 leaves the result."""
    rank = job.global_rank(local_rank)
    if rank != 0:
        job.events.close()
    cuda = torch.cuda.is_available()
    device, backend = (torch.device("cuda", local_rank), "nccl") if cuda else (torch.device("cpu"), "gloo")
    make_deterministic(device)  # before CUDA starts: cuBLAS reads its workspace setting then
    if cuda:
        torch.cuda.set_device(local_rank)
    else:
        # Share the cores: N ranks each using all of them would thrash.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // job.local_ranks))
    workdir = Path(job.workdir)
    join_group(job, rank, backend)
    on_event = job.events.send if rank == 0 else node_log(job, rank) if local_rank == 0 and job.gang else None
    try:
        cfg = job.cfg
        result = fit(
            cfg,
            job.data,
            CheckpointStore(open_storage(cfg.checkpoint_root), job.run_dir, cfg.keep_last),
            group=TorchGroup(device),
            device=device,
            stop=job.notice if local_rank == 0 else None,
            on_event=on_event,
            nodes=job.gang.num_nodes if job.gang else 1,
        )
        if rank == 0:
            partial = workdir / f"{RESULT_FILE}.partial"
            torch.save(asdict(result), partial)
            os.replace(partial, workdir / RESULT_FILE)
    except Exception as error:
        transient = is_transient(error) or (job.gang is not None and is_peer_loss(error))
        report = {"error": f"{error.__class__.__name__}: {error}", "transient": transient}
        (workdir / f"failure-{local_rank}.json").write_text(json.dumps(report))
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
    local_ranks: int,
    *,
    watch: NodeWatch | None = None,
    stop: StopSignal | None = None,
    on_event: TrainingCallback | None = None,
) -> FitResult | None:
    """Train with ``local_ranks`` data-parallel ranks here (in a gang, ``watch``'s: of
    ``num_nodes`` x as many); raise RankLost/RankFailed if any rank fails. The result is rank 0's:
    None on other nodes."""
    context = multiprocessing.get_context("spawn")
    notice = context.Event()
    events_in, events_out = context.Pipe(duplex=False)
    gang = watch.gang if watch else None
    with tempfile.TemporaryDirectory(prefix="spot-batch-ranks-") as workdir:
        job = RankJob(cfg, data, run_dir, local_ranks, workdir, notice, events_out, gang)
        ranks = torch_mp.start_processes(rank_main, args=(job,), nprocs=local_ranks, join=False, start_method="spawn")
        events_out.close()  # the ranks hold their copies; EOF once rank 0 is gone
        try:
            while not ranks.join(timeout=0.1, grace_period=GRACE_S):
                if stop is not None and stop.is_set():
                    notice.set()
                if watch is not None and watch.lost:
                    raise RankLost(f"{watch.lost}; the gang's retry resumes from the last checkpoint")
                relay(events_in, on_event)
        except ProcessException as error:
            relay(events_in, on_event)
            raise rank_failure(error, ranks, Path(workdir)) from None
        finally:
            # Whatever ended the wait (a failed rank, a lost node, an error in on_event), no rank outlives it.
            for process in ranks.processes:
                if process.is_alive():
                    process.kill()
                    process.join()
            if watch is not None:
                watch.close()
        relay(events_in, on_event)
        if watch is not None:
            watch.finish()
        result = Path(workdir) / RESULT_FILE
        if job.global_rank(0) != 0:
            return None
        if not result.exists():
            raise RankLost("rank 0 exited without a result (interrupted); the retry resumes from the last checkpoint")
        return FitResult(**torch.load(result, weights_only=True))
