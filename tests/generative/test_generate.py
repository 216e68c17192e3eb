"""The realism measures against hand-computed values, the DCGAN against a colour it must learn,
and ``medfool generate train`` end to end on the synthetic set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medfool.generative.dcgan import GanConfig, generate, train_gan
from medfool.generative.realism import frechet_distance, nearest_distances, two_sample_accuracy


def test_frechet_distance_of_gaussians_is_the_closed_form() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=gen)
    b = torch.randn(20000, 3, generator=gen) * torch.tensor([1.0, 2.0, 1.0]) + torch.tensor([1.0, 0.0, 0.0])
    # |mu|^2 = 1; diagonal covariances: sum (sigma_a - sigma_b)^2 = (1 - 2)^2 = 1
    assert frechet_distance(a, b) == pytest.approx(2.0, abs=0.1)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_the_two_sample_test_is_chance_on_one_distribution_and_sure_on_two() -> None:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(400, 8, generator=gen), torch.randn(400, 8, generator=gen)
    assert 0.4 <= two_sample_accuracy(a, b) <= 0.6
    assert two_sample_accuracy(a, b + 2.0) >= 0.95


def test_nearest_distances_find_copies_and_offsets() -> None:
    train = torch.rand(30, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    x = torch.stack([train[4], (train[7] + 0.1).clamp(max=10)])
    d = nearest_distances(x, train)
    assert float(d[0]) == pytest.approx(0.0, abs=1e-6) and float(d[1]) == pytest.approx(0.1, abs=1e-4)


def test_the_gan_learns_the_colour_of_its_class() -> None:
    """Images of one colour with noise: the fakes' mean colour must approach it (a generator
    that learnt nothing sits at mid-grey)."""
    gen = torch.Generator().manual_seed(3)
    colour = torch.tensor([0.8, 0.25, 0.3]).view(1, 3, 1, 1)
    x = (colour + 0.05 * torch.randn(256, 3, 28, 28, generator=gen)).clamp(0, 1)
    result = train_gan(x, GanConfig(width=8, epochs=15, batch_size=32, lr=1e-3, seed=0))
    fakes = generate(result.generator, 64, result.size, seed=1)
    assert fakes.shape == (64, 3, 28, 28) and float(fakes.min()) >= 0 and float(fakes.max()) <= 1
    # seeds 0-2 land within 0.04-0.08 here; mid-grey is 0.3 away from the red channel
    assert (fakes.mean(dim=(0, 2, 3)) - colour.flatten()).abs().max() < 0.15


def test_generate_train_end_to_end(tiny_model: Path, tmp_path: Path, fails_cleanly) -> None:
    from medfool.cli.main import main

    out = tmp_path / "g"
    assert main(["generate", "train", "-d", "synthetic", "--class", "1", "-m", str(tiny_model), "--epochs", "2",
                 "--n", "32", "--out", str(out), "--device", "cpu"]) == 0
    res = json.loads((out / "results.json").read_text())
    for key in ("fid", "fid_real_reference", "two_sample", "two_sample_real_reference", "nearest_train_distance",
                "read_as_class"):
        assert key in res
    assert res["fakes"] == 32 and 0 <= res["two_sample"] <= 1 and res["fid"] >= 0
    with np.load(out / "fakes.npz", allow_pickle=False) as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape[0] == 32
    assert (out / "fakes.png").is_file() and (out / "generator.safetensors").is_file()
    fails_cleanly(["generate", "train", "-d", "synthetic", "--class", "nope", "-m", str(tiny_model),
                   "--out", str(tmp_path / "o")], "nope", out=tmp_path / "o")
