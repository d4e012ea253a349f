"""Run a function in N gloo processes on this machine, with every wait bounded.

The DDP tests used a TCP rendezvous on a probed free port and gloo's default device (the address the hostname
resolves to) with gloo's 30-minute default timeout: on a machine where either does not work, a test waited until
CI itself was killed. Here the rendezvous is a file, gloo talks over the loopback interface, every collective
times out after `collective_timeout_s`, and each process prints its Python stacks and exits when the whole run
outlives `timeout_s`, so a hang becomes a failing test with the stacks that show where it stuck.

A process that cannot even rendezvous (the machine offers gloo no working loopback) reports that, and the test
skips saying why; anything that goes wrong after the rendezvous fails the test.
"""

from __future__ import annotations

import faulthandler
import os
import socket
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

RENDEZVOUS_FAILED = "rendezvous-failed-rank{rank}.txt"


def _loopback_interface() -> str | None:
    names = [name for _, name in socket.if_nameindex()]
    return next((n for n in names if n == "lo" or n.startswith("lo")), None)


def _entry(
    rank: int,
    worker: Callable[..., None],
    world: int,
    out: str,
    args: tuple,
    timeout_s: float,
    collective_timeout_s: float,
) -> None:
    # Print every thread's stack and exit before the parent gives up, so the failure says where it hung.
    faulthandler.dump_traceback_later(timeout_s, exit=True)
    lo = _loopback_interface()
    if lo is not None:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", lo)
    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo",
            init_method=Path(out, "rendezvous").as_uri(),
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=collective_timeout_s),
        )
    except Exception as err:  # noqa: BLE001 - any rendezvous failure is the machine's, reported to the parent
        Path(out, RENDEZVOUS_FAILED.format(rank=rank)).write_text(f"{type(err).__name__}: {err}")
        return
    try:
        worker(rank, world, out, *args)
    finally:
        dist.destroy_process_group()
        faulthandler.cancel_dump_traceback_later()


def run_ranks(
    worker: Callable[..., None],
    out: str | os.PathLike,
    *args: object,
    world: int = 2,
    timeout_s: float = 240.0,
    collective_timeout_s: float = 60.0,
) -> None:
    """Call `worker(rank, world, out, *args)` in `world` spawned processes joined in one gloo group.

    `worker` must be importable by name (a module-level function). Raises if a process fails or outlives
    `timeout_s`; skips the calling test if the processes could not rendezvous on this machine.
    """
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    Path(out).mkdir(parents=True, exist_ok=True)
    out = str(out)
    ctx = mp.start_processes(
        _entry,
        args=(worker, world, out, args, timeout_s, collective_timeout_s),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout_s + 30.0  # the children dump their stacks and exit at timeout_s
    while not ctx.join(timeout=5.0):
        if time.monotonic() > deadline:
            for process in ctx.processes:
                process.kill()
            raise TimeoutError(f"{world} gloo processes still running after {timeout_s + 30:.0f} s")
    failed = sorted(Path(out).glob(RENDEZVOUS_FAILED.format(rank="*")))
    if failed:
        reasons = "; ".join(p.read_text() for p in failed)
        print(reasons, file=sys.stderr)
        pytest.skip(f"gloo processes could not rendezvous on this machine: {reasons}")
