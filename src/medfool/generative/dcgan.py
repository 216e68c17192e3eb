"""A small DCGAN (Radford, Metz & Chintala, "Unsupervised representation learning with deep
convolutional generative adversarial networks", ICLR 2016) that trains on two CPU cores in
minutes: strided transposed convolutions from a normal code to a 32 or 64 px image, a mirrored
strided-convolution discriminator, batch norm, Adam (lr 2e-4, beta1 0.5) and the
non-saturating loss. Images of other sizes (28 px) are learnt at the next size up and resized
back with area averaging. Chuquicusma et al. (ISBI 2018) made lung-nodule patches this way
that fooled radiologists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

import torch
import torch.nn as nn
import torch.nn.functional as F

from medfool.errors import ConfigError

__all__ = ["GanConfig", "GanResult", "Generator", "generate", "train_gan"]


@dataclass(frozen=True)
class GanConfig:
    latent: int = 64            # size of the normal code
    width: int = 32             # channels of the last hidden layer (doubling towards the code)
    epochs: int = 60            # at most
    batch_size: int = 64
    lr: float = 2e-4
    seed: int = 0
    max_minutes: float = 15.0   # stop after this long even if epochs remain


def _side(h: int, w: int) -> int:
    if max(h, w) > 64:
        raise ConfigError(f"the DCGAN here makes images of at most 64 px; got {h}x{w}")
    return 32 if max(h, w) <= 32 else 64


class Generator(nn.Module):
    """Code (N, latent) -> images (N, C, side, side) in [-1, 1]."""

    def __init__(self, latent: int, channels: int, side: int, width: int) -> None:
        super().__init__()
        self.latent, self.channels, self.side, self.width = latent, channels, side, width
        mults = [8, 4, 2, 1] if side == 64 else [4, 2, 1]
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent, mults[0] * width, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(mults[0] * width), nn.ReLU(True)]
        for a, b in pairwise(mults):
            layers += [nn.ConvTranspose2d(a * width, b * width, 4, 2, 1, bias=False), nn.BatchNorm2d(b * width),
                       nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(z[:, :, None, None])
        return out


class _Discriminator(nn.Module):
    def __init__(self, channels: int, side: int, width: int) -> None:
        super().__init__()
        mults = [1, 2, 4, 8] if side == 64 else [1, 2, 4]
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for a, b in pairwise(mults):
            layers += [nn.Conv2d(a * width, b * width, 4, 2, 1, bias=False), nn.BatchNorm2d(b * width),
                       nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(mults[-1] * width, 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x).flatten()
        return out


def _init(m: nn.Module) -> None:
    """DCGAN's initialisation: N(0, 0.02) weights, batch norm N(1, 0.02)."""
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


@dataclass
class GanResult:
    generator: Generator
    size: tuple[int, int]                 # (H, W) of the images it stands for
    epochs_run: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def train_gan(images: torch.Tensor, cfg: GanConfig = GanConfig(),
              progress: Callable[[int, dict[str, float]], None] | None = None) -> GanResult:
    """Train on ``images`` (N, C, H, W) in [0, 1]; stops after ``cfg.epochs`` or
    ``cfg.max_minutes``, whichever comes first."""
    if images.ndim != 4 or images.shape[0] < 8:
        raise ConfigError(f"a GAN needs at least 8 images (N, C, H, W); got {tuple(images.shape)}")
    n, c, h, w = images.shape
    batch = min(cfg.batch_size, n)
    side = _side(h, w)
    torch.manual_seed(cfg.seed)
    gen, disc = Generator(cfg.latent, c, side, cfg.width), _Discriminator(c, side, cfg.width)
    gen.apply(_init)
    disc.apply(_init)
    x = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False) * 2 - 1
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    gen_rng = torch.Generator().manual_seed(cfg.seed)
    start, history, epoch = time.perf_counter(), [], 0
    for epoch in range(1, cfg.epochs + 1):
        d_sum = g_sum = 0.0
        order = torch.randperm(n, generator=gen_rng)
        steps = n // batch
        for s in range(steps):
            real = x[order[s * batch:(s + 1) * batch]]
            fake = gen(torch.randn(real.shape[0], cfg.latent, generator=gen_rng))
            d_loss = F.softplus(-disc(real)).mean() + F.softplus(disc(fake.detach())).mean()
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            g_loss = F.softplus(-disc(fake)).mean()  # non-saturating
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            d_sum, g_sum = d_sum + float(d_loss.detach()), g_sum + float(g_loss.detach())
        row = {"epoch": float(epoch), "d_loss": d_sum / steps, "g_loss": g_sum / steps,
               "seconds": time.perf_counter() - start}
        history.append(row)
        if progress is not None:
            progress(epoch, row)
        if row["seconds"] > cfg.max_minutes * 60:
            break
    return GanResult(gen.eval(), (h, w), epoch, time.perf_counter() - start, history)


def generate(generator: Generator, n: int, size: tuple[int, int], seed: int = 0,
             batch: int = 256) -> torch.Tensor:
    """``n`` images (N, C, H, W) in [0, 1] from codes drawn with ``seed``, resized to ``size``."""
    rng = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for s in range(0, n, batch):
            z = torch.randn(min(batch, n - s), generator.latent, generator=rng)
            img = (generator(z) + 1) / 2
            if tuple(img.shape[-2:]) != tuple(size):
                img = F.interpolate(img, size=size, mode="area")
            out.append(img.clamp(0, 1))
    return torch.cat(out) if out else torch.zeros(0, generator.channels, *size)
