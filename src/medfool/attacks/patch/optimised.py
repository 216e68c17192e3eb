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
from dataclasses import dataclass

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
from medfool.models.classifier import Classifier


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
    stain_jitter: float = 0.05        # HED jitter during optimisation for RGB tiles (0: off)

    def validate(self) -> None:
        check_range("area", self.area, 0.0, 1.0, lo_open=True)
        check_choice("shape", self.shape, SHAPES)
        check_int("steps", self.steps, 1)
        check_int("batch_size", self.batch_size, 1)
        check_range("lr", self.lr, 0.0, 100.0, lo_open=True)
        check_choice("region", self.region, ("anywhere", "inside", "outside"))
        check_range("stain_jitter", self.stain_jitter, 0.0, 1.0)
        if self.region != "anywhere" and self.box is None:
            raise ValueError(f"region {self.region!r} needs box=(top, left, bottom, right)")


@dataclass
class Patch:
    """A crafted patch (C, k, k) in [0, 1], its mask (1, k, k), and the training history."""

    pixels: torch.Tensor
    mask: torch.Tensor
    target: int | None
    history: list[float]


@register_attack
class AdversarialPatch(Attack):
    name = "patch"
    Config = PatchConfig
    tasks = frozenset({"multi-class", "binary"})
    paper = "Brown et al. 2017; Finlayson et al., Science 2019"
    config: PatchConfig

    def budget(self) -> float | None:
        return None  # the budget is the patch area: checked through extras["mask"]

    def side(self, height: int, width: int) -> int:
        return patch_side(self.config.area, height, width)

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
            where = sample_placements(idx.numel(), h, w, k, gen, region=cfg.region, box=cfg.box, rotate=cfg.rotate)
            with torch.enable_grad():
                patched, _ = paste(x[idx], torch.sigmoid(logits_param), mask, where)
                if cfg.stain_jitter > 0 and c == 3:
                    patched = hed_jitter(patched, gen, cfg.stain_jitter)
                z = two_logits(model(patched))
                if target is not None:
                    loss = F.cross_entropy(z, torch.full_like(idx, target))
                    fooled = z.argmax(1) == target
                else:
                    loss = -F.cross_entropy(z, y[idx])
                    fooled = z.argmax(1) != y[idx]
                opt.zero_grad(set_to_none=True)
                loss.backward()
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
        _, _, h, w = x.shape
        where = sample_placements(x.shape[0], h, w, patch.pixels.shape[-1], gen, region=self.config.region,
                                  box=self.config.box, rotate=self.config.rotate)
        x_adv, mask = paste(x, patch.pixels, patch.mask, where)
        return AttackResult.measure(
            self.name, self.config.to_json(), model, x, x_adv, y, target=patch.target,
            wall_s=time.perf_counter() - start,
            extras={"patch": patch.pixels, "patch_mask": patch.mask, "mask": mask, "history": patch.history})

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, gen: torch.Generator,
            counter: Counter) -> torch.Tensor:
        """Craft on the batch itself and paste at random placements (the universal-patch threat
        measured on its own training images; use craft + apply for held-out numbers)."""
        target = None
        if goal.target is not None:
            if bool((goal.target != goal.target[0]).any()):
                raise ValueError("a universal patch has one target class for every image")
            target = int(goal.target[0])
        patch = self.craft(model, x, goal.labels, gen, target, counter)
        _, _, h, w = x.shape
        where = sample_placements(x.shape[0], h, w, patch.pixels.shape[-1], gen, region=self.config.region,
                                  box=self.config.box, rotate=self.config.rotate)
        x_adv, mask = paste(x, patch.pixels, patch.mask, where)
        counter.extras.update(patch=patch.pixels, patch_mask=patch.mask, mask=mask, history=patch.history)
        return x_adv
