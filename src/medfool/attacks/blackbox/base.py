"""The black-box half of the attack interface.

A :class:`BlackBoxAttack` is registered and configured like every other attack and returns
the same :class:`AttackResult`, but it only ever sees the model through a
:class:`QueryCounter`: pass it our :class:`Classifier` (its gradients stay hidden) or any
:class:`PredictModel` (ONNX, a Python function). ``config.queries`` is the budget per image,
the clean query included; the counter refuses anything past it. The result's success mask
comes from the model's answer to the very image returned (every returned image was queried),
so no extra, unbudgeted query is made.
"""

from __future__ import annotations

import contextlib
import time
from abc import abstractmethod
from typing import Any, ClassVar

import torch

from medfool.attacks.base import (
    Attack,
    AttackResult,
    Counter,
    TargetSpec,
    _pred,
    _resolve_attack_labels,
    check_inputs,
    resolve_target,
    run_seed,
)
from medfool.attacks.blackbox.oracle import PredictModel, QueryCounter, from_classifier
from medfool.attacks.goal import Goal
from medfool.attacks.norms import l0, l2, linf
from medfool.models.classifier import Classifier
from medfool.utils.rng import ImageStreams, as_ids


class BlackBoxAttack(Attack):
    """Subclasses set ``needs`` ("probs" for score-based, "labels" for decision-based) and
    implement :meth:`search`."""

    needs: ClassVar[str] = "probs"

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:  # pragma: no cover  (black-box attacks use search)
        raise TypeError(f"{self.name} is a black-box attack: call it, it queries the model through a QueryCounter")

    @abstractmethod
    def search(self, oracle: QueryCounter, x: torch.Tensor, goal: Goal, clean: torch.Tensor,
               rng: ImageStreams) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the adversarial batch and the model's scores on it (from queries made)."""

    def oracle_for(self, model: Classifier | PredictModel) -> PredictModel:
        if isinstance(model, PredictModel):
            if self.needs == "probs" and model.output != "probs":
                raise ValueError(f"{self.name} is score-based and needs probabilities; this model answers with "
                                 "labels only (use hsj or boundary)")
            return model
        return from_classifier(model, self.needs)

    def __call__(self, model: Any, x: torch.Tensor, y: torch.Tensor, *, target: TargetSpec = None,
                 generator: torch.Generator | None = None, seed: int | None = None,
                 attack_labels: list[int] | None = None, clean_logits: torch.Tensor | None = None,
                 ids: torch.Tensor | list[int] | range | None = None) -> AttackResult:
        pm = self.oracle_for(model)
        check_inputs(pm, x, y)  # type: ignore[arg-type]
        if pm.task not in self.tasks:
            raise ValueError(f"{self.name} does not support {pm.task} models "
                             f"(supported: {', '.join(sorted(self.tasks))})")
        rng = ImageStreams(run_seed(seed, generator), as_ids(ids, x.shape[0]), x.device)
        was_training = isinstance(model, Classifier) and model.training
        if isinstance(model, Classifier):
            model.eval()
        start = time.perf_counter()
        n = x.shape[0]
        oracle = QueryCounter(pm, n, getattr(self.config, "queries", None), x.device)
        everyone = torch.arange(n, device=x.device)
        padded = model.padded() if isinstance(model, Classifier) else contextlib.nullcontext()
        try:
            with padded:
                clean = oracle.query(x, everyone)  # the attacker's first query: what does the model say now?
                tgt = resolve_target(pm, clean, y, target)  # type: ignore[arg-type]
                if tgt is not None and not self.targeted_ok:
                    raise ValueError(f"{self.name} is untargeted only")
                labels_idx = _resolve_attack_labels(pm, attack_labels)  # type: ignore[arg-type]
                goal = Goal(pm.task, y, tgt, labels_idx)
                x_adv, adv_scores = self.search(oracle, x, goal, clean, rng)
        finally:
            if was_training:
                model.train(True)
        x_adv = x_adv.detach()
        truth = Goal(pm.task, y, None, labels_idx)
        delta = x_adv - x
        return AttackResult(
            attack=self.name, x_adv=x_adv, success=goal.success(adv_scores), clean_correct=~truth.success(clean),
            clean_pred=_pred(clean, pm.task), adv_pred=_pred(adv_scores, pm.task), l0=l0(delta), l2=l2(delta),
            linf=linf(delta), gradients=torch.zeros(n, dtype=torch.int64, device=x.device),
            queries=oracle.used.clone(), wall_s=time.perf_counter() - start,
            config={"attack": self.name, **self.config.to_json()}, target=tgt,
        )
