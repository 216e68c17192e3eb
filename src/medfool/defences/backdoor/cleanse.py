"""Neural Cleanse (Wang et al. 2019): reverse-engineer a trigger per class, find the outlier.

Wang, Yao, Shan, Li, Viswanath, Zheng & Zhao, "Neural Cleanse: Identifying and Mitigating
Backdoor Attacks in Neural Networks", IEEE S&P 2019.

For every candidate label ``k``, find the smallest mask ``m_k`` and a pattern ``p_k`` that send
clean images to ``k`` when stamped as ``(1 - m) x + m p`` (the same formula as medfool's
triggers): minimise CE(f(stamp(x)), k) + lambda_k |m_k|_1, with lambda_k raised while the
stamp succeeds on >= 99 % of the batch and lowered while it does not (the paper's schedule).
All K candidates are optimised together, one forward over (K x batch) stamped images per
step. A label whose smallest mask is an outlier on the small side (anomaly index, from the
median absolute deviation, above 2) is reported as infected. With two classes the MAD of two
norms cannot single one out; the norms and their ratio are still reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from medfool.attacks.poisoning.triggers import Trigger
from medfool.data.dataset import Split
from medfool.errors import ConfigError
from medfool.models.classifier import Classifier
from medfool.utils.progress import progress
from medfool.vocab import MULTI_LABEL

__all__ = ["CleanseResult", "anomaly_index", "neural_cleanse"]


@dataclass
class CleanseResult:
    norms: list[float]  # L1 norm of each label's smallest successful mask (inf: never reached 99 %)
    success: list[float]  # that stamp's success rate on the last batch
    anomaly: list[float]  # (median - norm) / (1.4826 * MAD), per label
    infected: list[int]
    triggers: list[Trigger] = field(repr=False)
    details: dict[str, Any] = field(default_factory=dict)


def anomaly_index(norms: torch.Tensor) -> torch.Tensor:
    """How far below the median each norm lies, in consistency-scaled MADs. (K,) -> (K,)."""
    finite = torch.where(torch.isfinite(norms), norms, norms[torch.isfinite(norms)].max()
                         if bool(torch.isfinite(norms).any()) else torch.zeros_like(norms))
    # the median as the reference computes it (numpy: the mean of the two middle values for an
    # even count; torch.median would take the lower one and can change which label is flagged)
    med = finite.quantile(0.5)
    mad = 1.4826 * (finite - med).abs().quantile(0.5)
    return (med - finite) / mad.clamp_min(1e-12)


def neural_cleanse(model: Classifier, clean: Split, *, steps: int = 300, batch_size: int = 32, lr: float = 0.1,
                   init_cost: float = 1e-3, target_success: float = 0.99, threshold: float = 2.0,
                   seed: int = 0, max_images: int = 1000) -> CleanseResult:
    """Run Neural Cleanse with clean images from ``clean`` (e.g. the validation split)."""
    if model.task == MULTI_LABEL:
        raise ConfigError("Neural Cleanse is defined for single-label classifiers")
    if steps < 1 or batch_size < 1:
        raise ConfigError("Neural Cleanse needs steps >= 1 and batch_size >= 1")
    gen = torch.Generator().manual_seed(seed)
    device = model.device
    x_all, _ = clean.get(clean.sample_index(max_images, seed))
    x_all = x_all.to(device)
    k_classes = model.num_classes
    c, h, w = x_all.shape[1:]
    # tanh parametrisation keeps mask and pattern in [0, 1] without clipping
    mask_w = torch.zeros(k_classes, 1, h, w, device=device, requires_grad=True)
    pat_w = torch.zeros(k_classes, c, h, w, device=device, requires_grad=True)
    opt = torch.optim.Adam([mask_w, pat_w], lr=lr, betas=(0.5, 0.9))
    cost = torch.full((k_classes,), init_cost, device=device)
    best_norm = torch.full((k_classes,), float("inf"))
    best_mask = torch.zeros(k_classes, 1, h, w)
    best_pat = torch.zeros(k_classes, c, h, w)
    last_success = torch.zeros(k_classes)
    labels = torch.arange(k_classes, device=device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for _ in progress(range(steps), desc="neural cleanse", unit="step"):
            xb = x_all[torch.randint(x_all.shape[0], (batch_size,), generator=gen).to(device)]
            m = torch.tanh(mask_w) / 2 + 0.5  # (K, 1, H, W)
            pat = torch.tanh(pat_w) / 2 + 0.5  # (K, C, H, W)
            stamped = (1 - m.unsqueeze(1)) * xb.unsqueeze(0) + (m * pat).unsqueeze(1)  # (K, B, C, H, W)
            logits = model(stamped.reshape(-1, c, h, w))
            target = labels.repeat_interleave(batch_size)
            ce = F.cross_entropy(_two_logits(logits), target, reduction="none").view(k_classes, batch_size).mean(1)
            l1 = m.flatten(1).sum(1)
            loss = (ce + cost * l1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                success = (_two_logits(logits).argmax(1) == target).float().view(k_classes, batch_size).mean(1)
                ok = success >= target_success
                better = ok.cpu() & (l1.cpu() < best_norm)
                best_norm[better] = l1.detach().cpu()[better]
                best_mask[better] = m.detach().cpu()[better]
                best_pat[better] = pat.detach().cpu()[better]
                cost = torch.where(ok, cost * 1.05, cost / 1.05 ** 1.5)  # per step: the paper's x1.5 per patience
                last_success = success.cpu()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    anomaly = anomaly_index(best_norm) if k_classes > 2 else torch.full((k_classes,), float("nan"))
    infected = [k for k in range(k_classes) if k_classes > 2 and float(anomaly[k]) > threshold]
    triggers = [Trigger(best_mask[k], best_pat[k], {"kind": "reversed", "label": k}) for k in range(k_classes)]
    return CleanseResult(best_norm.tolist(), last_success.tolist(), anomaly.tolist(), infected, triggers,
                         {"steps": steps, "batch_size": batch_size, "threshold": threshold})


def _two_logits(logits: torch.Tensor) -> torch.Tensor:
    """Binary models with one logit z answer like the two-logit model (0, z)."""
    return torch.cat([torch.zeros_like(logits), logits], 1) if logits.shape[1] == 1 else logits
