"""A data-parallel team (two processes over torch.distributed, gloo) computes what one process
computes: the averaged gradient of a batch split unevenly over the members is the whole batch's
gradient, and two members training together end with the same weights and record."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medfool.data import make_synthetic
from medfool.models.distributed import TorchTeam
from medfool.models.train import TrainConfig, fit


def _join(rank: int, world: int, store: str) -> TorchTeam:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    return TorchTeam()


def _gradients(rank: int, world: int, store: str, out: str) -> None:
    """Member ``rank`` of a linear model's team: its share of batches of 5 images and of 1 image
    (where one member has none), averaged; writes what it holds after each."""
    team = _join(rank, world, store)
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    x, y = torch.randn(5, 6, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 1, 0])
    held = {}
    for name, batch in (("five", torch.arange(5)), ("one", torch.arange(1))):
        model.zero_grad(set_to_none=True)
        mine = batch[rank::world]
        if len(mine):
            torch.nn.functional.cross_entropy(model(x[mine]), y[mine]).backward()
        team.average_gradients(list(model.parameters()), len(mine), len(batch))
        held[name] = [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]
    unused = torch.nn.Parameter(torch.zeros(2))  # no member computes a gradient for it: it keeps none
    team.average_gradients([*model.parameters(), unused], 1, 2)
    held["unused_has_grad"] = [torch.tensor(unused.grad is not None)]
    bn = torch.nn.BatchNorm1d(2)
    bn.running_mean.fill_(float(rank))  # members 0 and 1: means 0 and 1, averaged to 0.5
    team.average_buffers(bn)
    held["bn_mean"] = [bn.running_mean.clone()]
    held["shared"] = [torch.tensor(team.share({"v": 10.0 + rank})["v"])]
    torch.save(held, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def _train(rank: int, world: int, store: str, out: str) -> None:
    """91 images at batch 30: the last batch of one image leaves member 1 with none; patience 1
    lets member 0's selection stop the run early, for both members alike."""
    team = _join(rank, world, store)
    ds = make_synthetic(per_split=(91, 30, 30), seed=3)
    result = fit(ds, TrainConfig(arch_kwargs={"width": 4}, epochs=6, batch_size=30, lr=1e-2, seed=5, patience=1),
                 team=team)
    torch.save({"state": result.model.state_dict(), "history": result.history, "best": result.best_epoch,
                "record": result.record["data_parallel"]}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def _spawn(fn: object, tmp_path: Path) -> list[dict[str, object]]:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(fn, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)  # type: ignore[arg-type]
    return [torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.slow
def test_averaged_gradients_are_the_whole_batchs(tmp_path: Path) -> None:
    a, b = _spawn(_gradients, tmp_path)
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    x, y = torch.randn(5, 6, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 1, 0])
    for name, n in (("five", 5), ("one", 1)):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[:n]), y[:n]).backward()
        whole = [p.grad for p in model.parameters()]
        for held in (a, b):  # both members hold the one-process gradient (a mean of the members' means would not:
            for got, want in zip(held[name], whole, strict=True):  # shares of 3 and 2 images)
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert torch.allclose(a["bn_mean"][0], torch.full((2,), 0.5))
    assert not bool(a["unused_has_grad"][0])
    assert float(a["shared"][0]) == float(b["shared"][0]) == 10.0  # member 0's row everywhere


@pytest.mark.slow
def test_two_members_train_one_model(tmp_path: Path) -> None:
    a, b = _spawn(_train, tmp_path)
    for key, value in a["state"].items():  # type: ignore[union-attr]
        torch.testing.assert_close(value, b["state"][key], rtol=0, atol=0)  # type: ignore[index]
    assert a["history"] == b["history"] and a["best"] == b["best"]
    assert len(a["history"]) < 6 or a["best"] == 6  # the early stop (patience 1) is taken by both alike
    assert a["record"]["workers"] == 2 and a["record"]["backend"] == "gloo"  # type: ignore[index]
    assert a["history"][-1]["val_accuracy"] > 0.6  # type: ignore[index]  # learnt (3 classes: 1/3 by chance)
