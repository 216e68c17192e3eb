"""The optimised universal adversarial patch.

Brown, Mané, Roy, Abadi & Gilmer, "Adversarial Patch", arXiv:1712.09665 (2017); against
medical imaging models, Finlayson et al., Science 363(6433), 2019.

One patch is trained on a set of images to push every one of them to a target class (or
away from its true class), with expectation over where it lands (uniform over the allowed
positions), its orientation (the 8 flips/quarter turns) and, for H&E tiles, the slide's
stain variation (HED jitter, Tellez et al. 2019). Each step pastes the patch into a whole
batch at once, so a step costs one forward+backward of that batch. ``apply`` measures the
patch on held-out images at random placements.
"""

from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medfool.attacks.base import (
    Attack,
    AttackConfig,
    AttackResult,
    Counter,
    check_choice,
    check_inputs,
    check_int,
    check_range,
    register_attack,
)
from medfool.attacks.goal import Goal, two_logits
from medfool.attacks.patch.placement import SHAPES, paste, patch_mask, patch_side, sample_placements
from medfool.attacks.transforms import hed_jitter
from medfool.errors import DataError
from medfool.models.classifier import Classifier
from medfool.utils.io import atomic_open
from medfool.utils.rng import GeneratorDraw, ImageStreams
from medfool.vocab import BINARY, MULTI_CLASS

__all__ = ["AdversarialPatch", "Patch", "PatchConfig"]


@dataclass(frozen=True, kw_only=True)
class PatchConfig(AttackConfig):
    area: float = 0.1                 # largest fraction of the image the patch may cover
    shape: str = "square"
    steps: int = 400                  # optimisation steps, one batch each
    batch_size: int = 64
    lr: float = 0.1                   # Adam on the patch's logits
    region: str = "anywhere"          # anywhere | inside | outside (the box)
    box: tuple[int, int, int, int] | None = None
    rotate: bool = True
    min_scale: float = 1.0            # EOT over size: the side is drawn in [min_scale * k, k] (1: fixed)
    stain_jitter: float = 0.05        # HED jitter during optimisation for RGB tiles (0: off)

    def validate(self) -> None:
        check_range("area", self.area, 0.0, 1.0, lo_open=True)
        check_choice("shape", self.shape, SHAPES)
        check_int("steps", self.steps, 1)
        check_int("batch_size", self.batch_size, 1)
        check_range("lr", self.lr, 0.0, 100.0, lo_open=True)
        check_choice("region", self.region, ("anywhere", "inside", "outside"))
        check_range("stain_jitter", self.stain_jitter, 0.0, 1.0)
        check_range("min_scale", self.min_scale, 0.0, 1.0, lo_open=True)
        if self.region != "anywhere" and self.box is None:
            raise ValueError(f"region {self.region!r} needs box=(top, left, bottom, right)")
        if self.box is not None:
            box = tuple(self.box)
            if len(box) != 4 or not all(isinstance(v, int) and v >= 0 for v in box) \
                    or box[0] >= box[2] or box[1] >= box[3]:
                raise ValueError(f"box must be (top, left, bottom, right) pixel bounds with top < bottom and "
                                 f"left < right, got {self.box}")


@dataclass
class Patch:
    """A crafted patch (C, k, k) in [0, 1], its mask (1, k, k), and the training history."""

    pixels: torch.Tensor
    mask: torch.Tensor
    target: int | None
    history: list[float]

    def save(self, path: str | Path, fingerprint: str = "") -> None:
        """Write the patch as a plain .npz (no pickles), with the fingerprint of its settings."""
        arrays = {"pixels": self.pixels.detach().cpu().numpy(), "mask": self.mask.detach().cpu().numpy(),
                  "target": np.array(-1 if self.target is None else self.target),
                  "history": np.array(self.history, dtype=np.float64), "fingerprint": np.array(fingerprint)}
        with atomic_open(path) as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> tuple[Patch, str]:
        """Read a patch written by ``save``; returns it and its fingerprint."""
        try:
            with np.load(path, allow_pickle=False) as f:
                pixels, mask = torch.from_numpy(f["pixels"]).float(), torch.from_numpy(f["mask"]).float()
                target, history, fp = int(f["target"]), f["history"].tolist(), str(f["fingerprint"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a readable patch file ({exc})") from None
        k = pixels.shape[-1]
        if pixels.dim() != 3 or pixels.shape[-2] != k or tuple(mask.shape) != (1, k, k):
            raise DataError(f"{path}: patch arrays have shapes {tuple(pixels.shape)} and {tuple(mask.shape)}, "
                            "expected (C, k, k) and (1, k, k)")
        if not bool(torch.isfinite(pixels).all()) or float(pixels.min()) < 0 or float(pixels.max()) > 1:
            raise DataError(f"{path}: patch pixels must be finite and in [0, 1]")
        return cls(pixels, mask, None if target < 0 else target, history), fp


@register_attack
class AdversarialPatch(Attack):
    name = "patch"
    Config = PatchConfig
    tasks = frozenset({MULTI_CLASS, BINARY})
    paper = "Brown et al. 2017; Finlayson et al., Science 2019"
    kind = "universal"
    budget_kind = "area"
    config: PatchConfig

    def craft_and_apply(self, model: Classifier, craft_x: torch.Tensor, craft_y: torch.Tensor, x: torch.Tensor,
                        y: torch.Tensor, *, seed: int, target: int | None = None) -> AttackResult:
        """Train the patch on the crafting images (generator seeded with ``seed``), paste it at
        random places on the held-out ones (``seed + 1``)."""
        start = time.perf_counter()
        patch = self.craft(model, craft_x, craft_y, torch.Generator().manual_seed(seed), target=target)
        result = self.apply(model, patch, x, y, torch.Generator().manual_seed(seed + 1))
        result.wall_s = time.perf_counter() - start
        return result

    def budget(self) -> float | None:
        return None  # the budget is the patch area: checked through extras["mask"]

    def side(self, height: int, width: int) -> int:
        return patch_side(self.config.area, height, width)

    def _draw_sides(self, n: int, k: int, gen: torch.Generator) -> list[int]:
        lo = max(1, round(self.config.min_scale * k))
        if lo >= k:
            return [k] * n
        return torch.randint(lo, k + 1, (n,), generator=gen).tolist()

    def _resized(self, pixels: torch.Tensor, mask: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The patch shrunk to ``side`` (area averaging, differentiable) and its mask at that size."""
        k = pixels.shape[-1]
        if side == k:
            return pixels, mask
        small = F.interpolate(pixels.unsqueeze(0), size=(side, side), mode="area").squeeze(0)
        return small, patch_mask(side, self.config.shape, pixels.device)

    def paste_random(self, x: torch.Tensor, patch: Patch, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Paste ``patch`` into every image at random allowed places, orientations and (with
        ``min_scale < 1``) sizes; one paste per distinct size, not per image."""
        cfg = self.config
        n, _, h, w = x.shape
        k = patch.pixels.shape[-1]
        sides = torch.tensor(self._draw_sides(n, k, gen))
        x_adv, mask = x.clone(), torch.zeros(n, 1, h, w, device=x.device)
        for side in torch.unique(sides).tolist():
            sel = (sides == side).nonzero().squeeze(1).to(x.device)
            pixels, m = self._resized(patch.pixels, patch.mask, int(side))
            where = sample_placements(sel.numel(), h, w, int(side), gen, region=cfg.region, box=cfg.box,
                                      rotate=cfg.rotate)
            x_adv[sel], mask[sel] = paste(x[sel], pixels, m, where)
        return x_adv, mask

    def craft(self, model: Classifier, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
              target: int | None = None, counter: Counter | None = None) -> Patch:
        """Train the patch on ``x`` (targeted at class ``target``, or away from ``y``)."""
        cfg = self.config
        n, c, h, w = x.shape
        k = self.side(h, w)
        mask = patch_mask(k, cfg.shape, x.device)
        logits_param = torch.logit(torch.rand(c, k, k, generator=gen).clamp(0.05, 0.95)).to(x.device)
        logits_param.requires_grad_(True)
        opt = torch.optim.Adam([logits_param], lr=cfg.lr)
        history: list[float] = []
        wins = 0.0
        for step in range(1, cfg.steps + 1):
            idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen).to(x.device)
            side = self._draw_sides(1, k, gen)[0]  # one size per step: the batch shares one paste
            with torch.enable_grad():
                pixels, m = self._resized(torch.sigmoid(logits_param), mask, side)
                where = sample_placements(idx.numel(), h, w, side, gen, region=cfg.region, box=cfg.box,
                                          rotate=cfg.rotate)
                patched, _ = paste(x[idx], pixels, m, where)
                if cfg.stain_jitter > 0 and c == 3:
                    patched = hed_jitter(patched, GeneratorDraw(gen, x.device), cfg.stain_jitter)
                z = two_logits(model(patched))
                if target is not None:
                    loss = F.cross_entropy(z, torch.full_like(idx, target))
                    fooled = z.argmax(1) == target
                else:
                    loss = -F.cross_entropy(z, y[idx])
                    fooled = z.argmax(1) != y[idx]
                # the gradient of the patch only: no weight gradients, so a step costs one
                # forward+backward to the input (and the model's .grad is left alone)
                (logits_param.grad,) = torch.autograd.grad(loss, [logits_param])
            opt.step()
            if counter is not None:
                counter.count(idx, gradients=1, queries=1)
            wins += float(fooled.float().mean())
            if step % 50 == 0 or step == cfg.steps:
                history.append(wins / (50 if step % 50 == 0 else step % 50))
                wins = 0.0
        return Patch(torch.sigmoid(logits_param).detach(), mask, target, history)

    def apply(self, model: Classifier, patch: Patch, x: torch.Tensor, y: torch.Tensor,
              gen: torch.Generator) -> AttackResult:
        """Paste the patch into ``x`` at random allowed placements and measure the result."""
        check_inputs(model, x, y)
        start = time.perf_counter()
        x_adv, mask = self.paste_random(x, patch, gen)
        return AttackResult.measure(
            self.name, self.config.to_json(), model, x, x_adv, y, target=patch.target,
            wall_s=time.perf_counter() - start,
            extras={"patch": patch.pixels, "patch_mask": patch.mask, "mask": mask, "history": patch.history})

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:
        """Craft on the batch itself and paste at random placements (the universal-patch threat
        measured on its own training images; use craft + apply for held-out numbers)."""
        target = None
        if goal.target is not None:
            if bool((goal.target != goal.target[0]).any()):
                raise ValueError("a universal patch has one target class for every image")
            target = int(goal.target[0])
        patch = self.craft(model, x, goal.labels, rng.generator, target, counter)  # universal: one generator
        x_adv, mask = self.paste_random(x, patch, rng.generator)
        counter.extras.update(patch=patch.pixels, patch_mask=patch.mask, mask=mask, history=patch.history)
        return x_adv
