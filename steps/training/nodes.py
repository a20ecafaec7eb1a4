"""Several instances training as one group (a Metaflow ``@parallel`` gang): where their ranks meet,
and how the loss of any one instance stops the others within seconds.

Each node's task spawns its N ranks (``steps.training.distributed``); rank ``r`` of node ``k`` is
global rank ``k * N + r`` of ``K * N``. The ranks meet through a TCPStore that node 0's task serves
at the main node's address (``current.parallel.main_ip``); the process group's collectives then
run node to node (gloo on CPU, NCCL on GPUs).

Liveness, because a collective's timeout must be long (rank 0 writes checkpoints while the others
wait in the barrier after it; NCCL's default is 10 minutes):

- a node whose process dies closes its sockets: the peers' next collective fails at once
  (measured: 0.2 s with gloo on loopback), which ``is_peer_loss`` makes a transient failure;
- a node that goes silent (instance gone, no FIN) stops beating: every node's task bumps a
  counter in the store each second and watches the others'; one that stalls for ``LOST_AFTER_S``,
  or a store that stops answering (node 0 gone), ends the node's wait (``NodeWatch.lost``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from ipaddress import ip_address
from typing import Any

from torch.distributed import TCPStore

from steps.training.determinism import derive_seed

BEAT_S = 1.0
LOST_AFTER_S = 15.0
# How long nodes wait for each other at the start (instances of one gang boot within minutes).
RENDEZVOUS_TIMEOUT_S = 600.0
# Rank 0 writes checkpoints while every other rank waits in the barrier after the write.
COLLECTIVE_TIMEOUT_S = 1800.0
# How long node 0 keeps serving the store for the other nodes to finish.
FAREWELL_S = 30.0


@dataclass(frozen=True)
class Gang:
    """This node's place in the gang (from ``current.parallel``) and where the ranks meet."""

    node_index: int
    num_nodes: int
    main_ip: str
    port: int

    @property
    def is_main(self) -> bool:
        return self.node_index == 0

    @property
    def on_loopback(self) -> bool:
        """Every node on this machine (Metaflow's local @parallel): talk over the loopback interface."""
        return ip_address(self.main_ip).is_loopback

    def store(self, timeout_s: float = RENDEZVOUS_TIMEOUT_S, serve: bool = False) -> TCPStore:
        """The gang's store at the main node (``serve``: this process hosts it)."""
        return TCPStore(
            self.main_ip,
            self.port,
            is_master=serve,
            wait_for_workers=False,
            timeout=timedelta(seconds=timeout_s),
        )


def gang_port(run_id: str, attempt: int, given: str | None = None) -> int:
    """The store's port: ``given`` (``MF_MASTER_PORT``, when a JobSet names one: Metaflow 2.19 writes
    "None"), else one derived from (run, attempt), so an attempt never meets a previous attempt's
    stragglers."""
    if given and given.isdigit():
        return int(given)
    return 20000 + derive_seed(0, "gang", run_id, attempt) % 30000


PEER_LOSS_MESSAGES = (
    "Connection closed by peer",  # gloo
    "Connection reset by peer",
    "remote process exited",  # NCCL
    "NCCL communicator was aborted",
)


def is_peer_loss(error: BaseException) -> bool:
    """A collective failed because another node went away: the gang's retry fixes it."""
    return isinstance(error, RuntimeError) and any(text in str(error) for text in PEER_LOSS_MESSAGES)


class NodeWatch:
    """Heartbeats through the gang's store; ``lost`` says which node stopped (None while all beat).

    Node 0's watch serves the store; ``exchange`` passes small facts between the nodes' tasks
    through it (what each node's input slice holds). ``finish()`` marks this node's ranks done;
    node 0 then waits (up to ``FAREWELL_S``) for every node to finish before the store goes away
    with it. As a context manager it stops beating on exit.
    """

    def __init__(self, gang: Gang) -> None:
        self.gang = gang
        self.lost: str | None = None
        self._stop = threading.Event()
        self._store = gang.store(serve=gang.is_main)
        self._thread = threading.Thread(target=self._run, name="node-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seen: dict[int, tuple[int, float]] = {}
        others = [k for k in range(self.gang.num_nodes) if k != self.gang.node_index]
        try:
            while not self._stop.wait(BEAT_S):
                self._store.add(f"beat/{self.gang.node_index}", 1)
                now = time.monotonic()
                for node in others:
                    beats = self._store.add(f"beat/{node}", 0)
                    if self._store.add(f"done/{node}", 0):
                        continue
                    last, since = seen.get(node, (-1, now))
                    if beats != last:
                        seen[node] = (beats, now)
                    elif beats > 0 and now - since > LOST_AFTER_S:
                        self.lost = f"node {node} of {self.gang.num_nodes} stopped answering for {now - since:.0f} s"
                        return
        except (RuntimeError, OSError) as error:  # the store is gone: node 0 went away
            if not self._stop.is_set():
                self.lost = f"node 0 of {self.gang.num_nodes} (the gang's store) is gone: {error}"

    def __enter__(self) -> NodeWatch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def exchange(self, name: str, value: Any) -> list[Any]:
        """Every node's ``value`` (JSON), in node order: this node's is published, the others' awaited."""
        store = self.gang.store()  # a connection of its own: the watch's thread uses the other
        store.set(f"{name}/{self.gang.node_index}", json.dumps(value))
        return [json.loads(store.get(f"{name}/{node}")) for node in range(self.gang.num_nodes)]

    def finish(self) -> None:
        """This node's ranks are done: stop beating; node 0 waits for the others to be done too."""
        self._stop.set()
        self._thread.join()
        try:
            self._store.add(f"done/{self.gang.node_index}", 1)
            if self.gang.is_main:
                deadline = time.monotonic() + FAREWELL_S
                pending = range(1, self.gang.num_nodes)
                while any(not self._store.add(f"done/{k}", 0) for k in pending) and time.monotonic() < deadline:
                    time.sleep(0.2)
        except (RuntimeError, OSError):  # node 0 has finished and gone: nothing left to tell it
            pass

    def close(self) -> None:
        """Stop beating (idempotent; after ``finish`` too)."""
        self._stop.set()
        self._thread.join()
