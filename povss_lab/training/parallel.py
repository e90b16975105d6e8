"""Data-parallel training over CPU cores: one process per worker, gradients averaged over gloo.

Why: syn_small's ops are too small for intra-op threads to pay, while two single-threaded
processes each run at full speed. On this project's 2-core build machine, training ran at 1.17
steps/s as one process of two threads and at 1.66 as two workers of one thread (whole runs,
batch 8, recorded in models/syn_small.json and its previous version). So `train --workers 2`
splits every batch over two processes: each draws its own scenes (`SceneStream(shard=rank)`)
and computes its share of the loss, and the gradients are averaged before the optimizer step,
which every worker then takes identically. The processes talk over loopback only (a file store in a
private temporary folder, gloo on `lo`).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn  # noqa: F401 - imported before any process group: see below
import torch.multiprocessing as mp

# torch.distributed.nn binds the default process group into its functions' default arguments
# (`group=group.WORLD`) when it is first imported. open_clip imports it, lazily, when the text
# tower first tokenizes: in a worker, after init_process_group. Bound there, the group
# outlived destroy_process_group, and gloo's threads with it, into the interpreter's
# finalization, where a thread that takes the GIL is ended by an unwinding through C++ that
# must not throw: std::terminate, SIGABRT ("terminate called without an active exception"),
# now and then at a worker's exit. Imported here, before any group, it binds none.

_FAILED = "povss_failed_workers"  # store key: how many workers have failed


@dataclass(frozen=True)
class Workers:
    """This process's place among the data-parallel workers (rank 0 writes every output)."""

    rank: int = 0
    size: int = 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


SINGLE = Workers()


def average_gradients(params: Sequence[torch.nn.Parameter], workers: Workers) -> None:
    """Replace every gradient by its mean over the workers, in one all-reduce.

    A parameter without a gradient on some worker counts as a zero gradient there; one that
    has none on any worker keeps none, as in a single process (AdamW then skips it).
    """
    if not workers.parallel:
        return
    present = torch.tensor([float(p.grad is not None) for p in params])
    flat = torch.cat([
        *((p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params),
        present,
    ])
    dist.all_reduce(flat)
    offset = 0
    for p, seen in zip(params, flat[-len(params):].tolist()):
        n = p.numel()
        if seen:
            p.grad = (flat[offset:offset + n] / workers.size).view_as(p).clone()
        offset += n


def average_values(values: dict[str, float], workers: Workers) -> dict[str, float]:
    """The mean of each logged loss over the workers (the loss of the whole batch)."""
    if not workers.parallel:
        return values
    keys = sorted(values)
    buf = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(buf)
    return {k: float(v) / workers.size for k, v in zip(keys, buf.tolist())}


def gather_objects(obj: Any, workers: Workers) -> list[Any]:
    """Every worker's `obj`, in rank order (for checkpoints of per-worker random state)."""
    if not workers.parallel:
        return [obj]
    out: list[Any] = [None] * workers.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_parameters(modules: Iterable[torch.nn.Module], workers: Workers) -> None:
    """Make every worker start from rank 0's parameters and buffers."""
    if not workers.parallel:
        return
    with torch.no_grad():
        for module in modules:
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, src=0)


def _run_worker(rank: int, size: int, store_path: str, threads: int,
                fn: Callable[..., Any], args: tuple) -> None:
    torch.set_num_threads(threads)
    store = dist.FileStore(store_path, size)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=size)
    try:
        fn(Workers(rank, size), *args)
        dist.barrier()  # leave together: rank 0 writes the outputs after the last step
    except KeyboardInterrupt:  # Ctrl-C reaches every worker too: the parent reports it
        # Leave at once, without gloo's teardown: a collective in flight on one of gloo's
        # threads waits for the peer, which is leaving too, and destroy_process_group would
        # join that thread (a hang until gloo's 30-minute timeout). Nothing is left to write.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    except BaseException:
        # The first worker to fail is the one to report. The others' collectives then fail
        # because it left ("Connection closed by peer"); they leave quietly, so that the
        # launcher raises the cause, not a consequence.
        if store.add(_FAILED, 1) > 1:
            sys.exit(0)
        raise
    finally:
        # Joins gloo's threads while the interpreter is alive (see the import above).
        dist.destroy_process_group()


def launch(fn: Callable[..., Any], size: int, threads: int, *args: Any) -> None:
    """Run ``fn(Workers(rank, size), *args)`` in `size` processes of `threads` threads each.

    Raises if any worker fails (torch.multiprocessing reports which one, with its traceback).
    """
    if size < 1:
        raise ValueError(f"need at least one worker, got {size}")
    if size == 1:
        torch.set_num_threads(threads)
        fn(SINGLE, *args)
        return
    # Keep gloo's transport on loopback, as every process of this project keeps DDS there.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with tempfile.TemporaryDirectory(prefix="povss_train_") as tmp:
        store = os.path.join(tmp, "store")  # a file store: loopback only, no port
        try:
            mp.spawn(_run_worker, args=(size, store, threads, fn, args), nprocs=size, join=True)
        except mp.ProcessExitedException as exc:
            if exc.exit_code == 130:  # a worker left on Ctrl-C before this process noticed
                raise KeyboardInterrupt from None
            raise
