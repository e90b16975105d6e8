"""Data-parallel training: real worker processes, real gloo all-reduces over loopback."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_synthetic_train import TINY_OPTS, TINY_SYN

from povss_lab.synthetic.world import World
from povss_lab.training.loop import train
from povss_lab.training.parallel import SINGLE, Workers, average_gradients, launch
from povss_lab.training.train_data import SceneStream
from povss_ros.san.checkpoint import load_weights
from povss_ros.san.model import build_san


def _toy_grads(rank: int) -> tuple[list[torch.Tensor | None], list[torch.nn.Parameter]]:
    """Gradients of a toy model on rank-specific data: `used` always, `rank0_only` on rank 0
    only, `unused` never."""
    torch.manual_seed(0)
    used, rank0_only, unused = torch.nn.Linear(4, 3), torch.nn.Linear(3, 1), torch.nn.Linear(2, 2)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(100 + rank))
    y = used(x)
    loss = (rank0_only(y).sum() if rank == 0 else 0.0) + y.square().mean()
    loss.backward()
    return [p.grad for m in (used, rank0_only, unused) for p in m.parameters()], [
        p for m in (used, rank0_only, unused) for p in m.parameters()]


def _average_worker(workers: Workers, folder: str) -> None:
    _, params = _toy_grads(workers.rank)
    average_gradients(params, workers)
    torch.save([p.grad for p in params], Path(folder) / f"rank{workers.rank}.pt")


def test_gradients_are_averaged_over_two_processes(tmp_path):
    launch(_average_worker, 2, 1, str(tmp_path))
    g0, _ = _toy_grads(0)
    g1, _ = _toy_grads(1)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for i, (a, b, mine) in enumerate(zip(g0, g1, got)):
            if a is None and b is None:
                assert mine is None, f"param {i}: no worker had a gradient, so none is made up"
                continue
            a = a if a is not None else torch.zeros_like(b)
            b = b if b is not None else torch.zeros_like(a)
            torch.testing.assert_close(mine, (a + b) / 2, msg=f"rank {rank}, param {i}")


def test_a_single_worker_leaves_gradients_alone():
    grads, params = _toy_grads(0)
    before = [None if g is None else g.clone() for g in grads]
    average_gradients(params, SINGLE)
    for p, g in zip(params, before):
        assert (p.grad is None) if g is None else torch.equal(p.grad, g)


def test_each_worker_draws_scenes_of_its_own():
    world = World(0)
    plain = [s.spec.seed for s in SceneStream(world, 5).next(3)]
    assert [s.spec.seed for s in SceneStream(world, 5, shard=0).next(3)] == plain
    other = [s.spec.seed for s in SceneStream(world, 5, shard=1).next(3)]
    assert not set(other) & set(plain)
    with pytest.raises(ValueError, match="shard"):
        SceneStream(world, 5, shard=-1)


class _Stop(Exception):
    pass


def _train_worker(workers: Workers, opts, out: str, resume: bool, stop_at: int | None) -> None:
    """Train TINY_SYN; rank 0 writes its log lines next to the weights."""
    log_path = Path(out).with_suffix(".log")

    def log(line: str) -> None:
        with log_path.open("a") as f:
            f.write(line + "\n")
        if stop_at is not None and line.startswith(f"step {stop_at}/"):
            raise _Stop(line)

    train(TINY_SYN, opts, out, resume=resume, log=log, workers=workers)


def test_two_workers_train_checkpoint_and_resume_to_the_same_weights(tmp_path):
    opts = replace(TINY_OPTS, steps=8, batch_size=2, workers=2, text_prior_steps=3,
                   eval_scenes=0, ckpt_every=5)
    whole = tmp_path / "whole.safetensors"
    launch(_train_worker, 2, 1, opts, str(whole), False, None)
    lines = whole.with_suffix(".log").read_text().splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    assert [s.split()[1] for s in steps] == ["5/8", "8/8"]  # one log: rank 0's only
    killed = tmp_path / "killed.safetensors"
    # Rank 0 stops after its step-5 checkpoint. Rank 1's next collective then fails; it
    # leaves quietly, and the launch reports the cause: rank 0's exception, never a signal.
    with pytest.raises(mp.ProcessRaisedException, match="_Stop"):
        launch(_train_worker, 2, 1, opts, str(killed), False, 5)
    state = killed.with_name(killed.name + ".state.pt")
    saved = torch.load(state, weights_only=True)
    assert len(saved["streams"]) == len(saved["generators"]) == 2
    launch(_train_worker, 2, 1, opts, str(killed), True, None)
    assert "resuming from step 5" in killed.with_suffix(".log").read_text()
    assert not state.exists()
    a = load_weights(build_san(TINY_SYN, seed=None), whole).state_dict()
    b = load_weights(build_san(TINY_SYN, seed=None), killed).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_workers_must_match_the_options_and_split_the_batch(tmp_path):
    out = tmp_path / "x.safetensors"
    with pytest.raises(ValueError, match="workers"):
        train(TINY_SYN, replace(TINY_OPTS, workers=2), out, log=lambda _: None)  # run alone
    with pytest.raises(ValueError, match="evenly"):
        train(TINY_SYN, replace(TINY_OPTS, batch_size=3, workers=2), out,
              workers=Workers(0, 2), log=lambda _: None)
    assert not out.exists()
