"""What "fooled" means for one batch, for every task type.

A :class:`Goal` turns logits into three things every attack needs: a per-sample loss to
*maximise*, a per-sample margin (> 0 while the model still resists, < 0 once fooled) and the
success test. It hides the task differences:

* multi-class, and binary with two logits: untargeted (leave the true class) or targeted;
* binary with one logit ``z``: treated as the two logits ``[0, z]``;
* multi-label: a chosen set of labels ``S``. Untargeted succeeds when any label in ``S`` is
  flipped; targeted succeeds when every label in ``S`` takes its target value (0/1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medfool.vocab import MULTI_LABEL, Loss, Task

__all__ = ["Goal", "effective_loss", "ranked_others", "two_logits"]


def two_logits(logits: torch.Tensor) -> torch.Tensor:
    """Binary one-logit models as two logits: softmax([0, z]) == [1 - sigmoid(z), sigmoid(z)]."""
    if logits.shape[1] == 1:
        return torch.cat([torch.zeros_like(logits), logits], dim=1)
    return logits


def effective_loss(kind: Loss, task: Task, n_outputs: int, targeted: bool) -> Loss:
    """The loss an attack can use: DLR needs >= 3 classes (>= 4 targeted: its denominator reads
    the third and fourth largest logits) and a single-label model; otherwise the margin loss,
    which ranks the same way for two classes and needs no extra logits."""
    if kind != "dlr":
        return kind
    if task == MULTI_LABEL or max(2, n_outputs) < (4 if targeted else 3):
        return "margin"
    return kind


def ranked_others(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(n, K) class indices by decreasing logit, the true class last: the targets APGD-T and
    FAB-T try in turn."""
    return z.scatter(1, labels[:, None], float("-inf")).argsort(dim=1, descending=True)


def _other_max(z: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """max_{j != cls} z_j per row."""
    masked = z.scatter(1, cls[:, None], float("-inf"))
    return masked.max(dim=1).values


class Goal:
    """Loss, margin and success for a batch; every method takes an index into the batch so an
    attack can work on the still-active samples only."""

    def __init__(self, task: Task, labels: torch.Tensor, target: torch.Tensor | None = None,
                 attack_labels: torch.Tensor | None = None) -> None:
        self.task = task
        self.labels = labels
        self.target = target
        self.targeted = target is not None
        if task == MULTI_LABEL:
            n_labels = labels.shape[1]
            mask = torch.zeros(n_labels, dtype=torch.bool, device=labels.device)
            if attack_labels is None:
                mask[:] = True
            else:
                mask[attack_labels] = True
            self.label_mask = mask
            # desired value of each attacked label: the target, or the flipped truth
            desired = target if target is not None else 1 - labels
            self.sign = (2 * desired - 1).float()  # +1 where the label must end positive

    # ---------------------------------------------------------------------------------------
    def _sel(self, t: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        return t if idx is None else t[idx]

    def margin(self, logits: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) distance to success in logit units: > 0 not yet fooled, < 0 fooled."""
        if self.task == MULTI_LABEL:
            s = self._sel(self.sign, idx)[:, self.label_mask]
            z = logits[:, self.label_mask]
            per_label = -s * z  # > 0 while that label is not at its desired value
            if self.targeted:
                return per_label.max(dim=1).values  # every label must reach its value
            # untargeted: fooled once any label reaches its flipped value, so the distance to
            # success is that of the label closest to flipping
            return per_label.min(dim=1).values
        z = two_logits(logits)
        if self.targeted:
            t = self._sel(self.target, idx)  # type: ignore[arg-type]
            return _other_max(z, t) - z.gather(1, t[:, None])[:, 0]
        y = self._sel(self.labels, idx)
        return z.gather(1, y[:, None])[:, 0] - _other_max(z, y)

    def loss(self, logits: torch.Tensor, idx: torch.Tensor | None = None, kind: Loss = "ce") -> torch.Tensor:
        """(n,) loss to maximise: cross-entropy away from the label (or towards the target), the
        negative margin ('margin'), or AutoAttack's scale-free DLR ('dlr'; the margin where DLR
        is undefined, see :func:`effective_loss`)."""
        kind = effective_loss(kind, self.task, logits.shape[1], self.targeted)
        if kind == "margin":
            return -self.margin(logits, idx)
        if self.task == MULTI_LABEL:
            s = self._sel(self.sign, idx)[:, self.label_mask]
            z = logits[:, self.label_mask]
            desired = (s > 0).float()
            return -F.binary_cross_entropy_with_logits(z, desired, reduction="none").sum(dim=1)
        z = two_logits(logits)
        if kind == "dlr":
            return self._dlr(z, idx)
        if self.targeted:
            return -F.cross_entropy(z, self._sel(self.target, idx), reduction="none")  # type: ignore[arg-type]
        return F.cross_entropy(z, self._sel(self.labels, idx), reduction="none")

    def _dlr(self, z: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        """Difference of Logits Ratio (Croce & Hein 2020): invariant to logit shift and scale."""
        srt = z.sort(dim=1, descending=True).values
        if self.targeted:
            t = self._sel(self.target, idx)  # type: ignore[arg-type]
            y = self._sel(self.labels, idx)
            num = z.gather(1, y[:, None])[:, 0] - z.gather(1, t[:, None])[:, 0]
            den = srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + 1e-12
            return -num / den
        y = self._sel(self.labels, idx)
        num = z.gather(1, y[:, None])[:, 0] - _other_max(z, y)
        den = srt[:, 0] - srt[:, 2] + 1e-12
        return -num / den

    def resistance(self, logits: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) the model's probability of still resisting, to *minimise* (the fitness of
        Su et al.'s one-pixel attack): the true class's probability (untargeted), one minus the
        target's (targeted); for multi-label, per attacked label the probability of *not* having
        its desired value, combined as success is (any label for untargeted, all for targeted)."""
        if self.task == MULTI_LABEL:
            s = self._sel(self.sign, idx)[:, self.label_mask]
            p_not = torch.sigmoid(-s * logits[:, self.label_mask])
            return p_not.max(dim=1).values if self.targeted else p_not.min(dim=1).values
        p = torch.softmax(two_logits(logits), dim=1)
        if self.targeted:
            return 1 - p.gather(1, self._sel(self.target, idx)[:, None])[:, 0]  # type: ignore[arg-type]
        return p.gather(1, self._sel(self.labels, idx)[:, None])[:, 0]

    def success(self, logits: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) bool, computed from predictions exactly as a user would recompute it."""
        if self.task == MULTI_LABEL:
            pred = (logits > 0).long()[:, self.label_mask]
            if self.targeted:
                assert self.target is not None
                want = self._sel(self.target, idx)[:, self.label_mask]
                return (pred == want).all(dim=1)
            truth = self._sel(self.labels, idx)[:, self.label_mask]
            return (pred != truth).any(dim=1)
        pred = two_logits(logits).argmax(dim=1)
        if self.targeted:
            return pred == self._sel(self.target, idx)  # type: ignore[arg-type]
        return pred != self._sel(self.labels, idx)
