"""Perceptibility measures against published reference values and limiting cases."""

from __future__ import annotations

import math

import pytest
import torch

from medfool.eval.perceptibility import mean_ciede2000, psnr, ssim
from medfool.utils.colour import ciede2000, rgb_to_lab

# Sharma, Wu & Dalal (2005), Table 1: (L1, a1, b1), (L2, a2, b2), dE00
SHARMA = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 3.1571, -77.2803), (50.0, 0.0, -82.7485), 2.8615),
    ((50.0, 2.8361, -74.0200), (50.0, 0.0, -82.7485), 3.4412),
    ((50.0, -1.3802, -84.2814), (50.0, 0.0, -82.7485), 1.0000),
    ((50.0, 2.5, 0.0), (50.0, 0.0, -2.5), 4.3065),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),
]


@pytest.mark.parametrize(("lab1", "lab2", "expected"), SHARMA)
def test_ciede2000_matches_sharma_table(lab1, lab2, expected):
    a = torch.tensor(lab1, dtype=torch.float64).view(1, 3, 1)
    b = torch.tensor(lab2, dtype=torch.float64).view(1, 3, 1)
    assert float(ciede2000(a, b)) == pytest.approx(expected, abs=1e-4)
    assert float(ciede2000(b, a)) == pytest.approx(expected, abs=1e-4)  # symmetric


def test_lab_of_white_and_black():
    lab = rgb_to_lab(torch.tensor([1.0, 0.0]).view(2, 1, 1, 1).expand(2, 3, 1, 1).double())
    assert lab[0, :, 0, 0].tolist() == pytest.approx([100.0, 0.0, 0.0], abs=1e-3)
    assert lab[1, :, 0, 0].tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-3)


def test_identical_images():
    x = torch.rand(2, 3, 28, 28)
    assert torch.isinf(psnr(x, x)).all()
    assert torch.allclose(ssim(x, x), torch.ones(2))
    assert torch.allclose(mean_ciede2000(x, x), torch.zeros(2), atol=1e-6)


def test_psnr_value_and_grayscale_colour_difference():
    x = torch.zeros(1, 1, 4, 4)
    assert float(psnr(x, x + 0.1)) == pytest.approx(20.0, abs=1e-4)
    assert math.isnan(float(mean_ciede2000(x, x + 0.1)))


def test_ssim_drops_with_noise():
    x = torch.rand(1, 3, 28, 28)
    small = float(ssim(x, (x + 0.01 * torch.randn_like(x)).clamp(0, 1)))
    large = float(ssim(x, (x + 0.3 * torch.randn_like(x)).clamp(0, 1)))
    assert 1.0 > small > large
