"""How real generated images look, measured without a human.

* :func:`frechet_distance`: FID (Heusel et al., NeurIPS 2017) between two sets of features, in a
  feature space medfool computes itself (a medfool model's deep features) instead of downloaded
  Inception weights; comparable within one feature space only.
* :func:`two_sample_accuracy`: the classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017): a
  logistic regression on the features learns real against generated on one half and is scored on
  the other; 50 % means it cannot tell them apart.
* :func:`nearest_distances`: each image's distance to its nearest training image (RMS over
  pixels, 0-1 scale); a "fake" at distance 0 copies a training image and is no fake.
"""

from __future__ import annotations

import torch

from medfool.errors import ConfigError

__all__ = ["frechet_distance", "nearest_distances", "two_sample_accuracy"]


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    root: torch.Tensor = (vecs * vals.clamp_min(0).sqrt()) @ vecs.T
    return root


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) of features (N, D), in float64."""
    if a.shape[0] < 2 or b.shape[0] < 2 or a.shape[1] != b.shape[1]:
        raise ConfigError("FID needs two sets of at least 2 feature vectors of one dimension")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrt_psd(s_a)
    cross = torch.linalg.eigvalsh(root_a @ s_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * cross)


def two_sample_accuracy(real: torch.Tensor, fake: torch.Tensor, *, seed: int = 0, steps: int = 300) -> float:
    """Held-out accuracy of a logistic regression telling ``real`` from ``fake`` features (N, D):
    trained on a seeded half of each (equal counts), tested on the rest."""
    n = min(real.shape[0], fake.shape[0])
    if n < 4:
        raise ConfigError("the two-sample test needs at least 4 real and 4 generated images")
    gen = torch.Generator().manual_seed(seed)
    r = real[torch.randperm(real.shape[0], generator=gen)[:n]]
    f = fake[torch.randperm(fake.shape[0], generator=gen)[:n]]
    half = n // 2
    x_tr, x_te = torch.cat([r[:half], f[:half]]).double(), torch.cat([r[half:], f[half:]]).double()
    y_tr = torch.cat([torch.ones(half), torch.zeros(half)]).double()
    y_te = torch.cat([torch.ones(n - half), torch.zeros(n - half)]).double()
    mu, sd = x_tr.mean(0), x_tr.std(0).clamp_min(1e-6)
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    w = torch.zeros(x_tr.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x_tr @ w + b, y_tr) + 1e-3 * w.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((x_te @ w + b > 0).double() == y_te).double().mean())


def nearest_distances(x: torch.Tensor, reference: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """(N,) each image's RMS pixel distance to its nearest image of ``reference`` (M, C, H, W)."""
    if reference.shape[0] == 0 or x.shape[1:] != reference.shape[1:]:
        raise ConfigError("nearest distances need reference images of the same shape")
    ref = reference.flatten(1).double()
    ref_sq = ref.pow(2).sum(1)
    out = []
    for s in range(0, x.shape[0], batch):
        q = x[s:s + batch].flatten(1).double()
        d2 = q.pow(2).sum(1, keepdim=True) + ref_sq[None] - 2 * q @ ref.T
        out.append((d2.min(1).values.clamp_min(0) / q.shape[1]).sqrt())
    return torch.cat(out).float() if out else torch.zeros(0)
