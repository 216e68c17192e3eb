"""Natural-variation corruptions: graded, per-image reproducible, and what they claim to be."""

from __future__ import annotations

import itertools

import pytest
import torch

from medfool.eval.corruptions import (
    HISTOLOGY,
    XRAY,
    blur,
    corrupt,
    corruptions_for,
    disk_kernel,
    jpeg,
)
from medfool.utils.rng import ImageStreams


def _tiles(channels: int, size: int, n: int = 4) -> torch.Tensor:
    """Smooth structured images (not flat: blur and JPEG must have something to change)."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack([0.5 + 0.3 * torch.sin(2 * torch.pi * (3 + k) * (xx + 0.7 * yy)) for k in range(n)])
    tint = 0.6 + 0.4 * torch.rand(n, channels, 1, 1, generator=g)
    return (base[:, None] * tint + 0.05 * torch.rand(n, channels, size, size, generator=g)).clamp(0, 1)


def _draw(n: int, seed: int = 0) -> ImageStreams:
    return ImageStreams(seed, torch.arange(n))


@pytest.mark.parametrize("channels", [3, 1])
def test_every_corruption_changes_images_more_at_each_severity(channels: int):
    """At 224 px (MedMNIST-C's size): the mean change grows strictly with the severity, and
    severity 5 changes every image (a corruption that does nothing fails here)."""
    x = _tiles(channels, 224)
    for c in corruptions_for(channels):
        dist = []
        for s in range(1, 6):
            out = corrupt(x, c, s, _draw(len(x)).rows(torch.arange(len(x))))
            assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
            dist.append((out - x).flatten(1).norm(dim=1))
        means = [float(d.mean()) for d in dist]
        assert all(b > a for a, b in itertools.pairwise(means)), (c.name, means)
        assert bool((dist[-1] > 0).all()), c.name


def test_the_modality_picks_the_set():
    assert corruptions_for(3) is HISTOLOGY and corruptions_for(1) is XRAY
    assert {c.name for c in HISTOLOGY} >= {"stain", "defocus", "jpeg", "noise", "brightness-up"}
    assert {c.name for c in XRAY} >= {"contrast-down", "gamma-up", "blur", "noise"}


@pytest.mark.parametrize("name", ["noise", "stain"])
def test_random_corruptions_do_not_depend_on_the_batch(name: str):
    x = _tiles(3, 28, n=6)
    c = next(c for c in HISTOLOGY if c.name == name)
    ids = torch.tensor([11, 5, 42, 7, 3, 99])
    whole = corrupt(x, c, 3, ImageStreams(1, ids).rows(torch.arange(6)))
    alone = corrupt(x[2:3], c, 3, ImageStreams(1, ids[2:3]).rows(torch.arange(1)))
    assert torch.equal(whole[2:3], alone)
    other_seed = corrupt(x, c, 3, ImageStreams(2, ids).rows(torch.arange(6)))
    assert not torch.equal(whole, other_seed)


def test_disk_kernel_blurs_even_below_one_pixel():
    for r in (0.4, 1.0, 2.5):
        k = disk_kernel(r)
        assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
        centre = k.shape[0] // 2
        assert float(k[centre, centre]) < 1.0  # neighbours get weight: it is not the identity


def test_blur_follows_the_image_size():
    """MedMNIST-C's kernel size 11 at 224 px is sigma 2.0; at 28 px it is an eighth of that,
    which leaves a 28 px image almost unchanged (documented, not a bug)."""
    big, small = _tiles(1, 224), _tiles(1, 28)
    d_big = float((blur(big, 11, _draw(4).rows(torch.arange(4))) - big).abs().mean())
    d_small = float((blur(small, 11, _draw(4).rows(torch.arange(4))) - small).abs().mean())
    assert d_big > 5 * d_small


def test_jpeg_round_trip_is_lossy_and_keeps_layout():
    for channels in (1, 3):
        x = _tiles(channels, 64)
        out = jpeg(x, 10, _draw(4).rows(torch.arange(4)))
        assert out.shape == x.shape and out.dtype == x.dtype
        err = (out - x).abs()
        assert 0.005 < float(err.mean()) < 0.1


def test_bad_severity_is_refused():
    with pytest.raises(ValueError, match="severity"):
        corrupt(_tiles(3, 28), HISTOLOGY[0], 6, _draw(4).rows(torch.arange(4)))
    with pytest.raises(ValueError, match="RGB"):
        corrupt(_tiles(1, 28), HISTOLOGY[0], 1, _draw(4).rows(torch.arange(4)))
