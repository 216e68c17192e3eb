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

from abc import abstractmethod
from typing import ClassVar

import torch

from medfool.attacks.base import Attack, Counter, Victim
from medfool.attacks.blackbox.oracle import QueryCounter
from medfool.attacks.goal import Goal
from medfool.models.classifier import Classifier
from medfool.models.predict import PredictModel, from_classifier
from medfool.utils.rng import ImageStreams
from medfool.vocab import Output

__all__ = ["BlackBoxAttack"]


class BlackBoxAttack(Attack):
    """Subclasses set ``needs`` ("probs" for score-based, "labels" for decision-based) and
    implement :meth:`search`."""

    needs: ClassVar[Output] = "probs"
    queries_only = True

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:  # pragma: no cover  (black-box attacks use search)
        raise TypeError(f"{self.name} is a black-box attack: call it, it queries the model through a QueryCounter")

    @abstractmethod
    def search(self, oracle: QueryCounter, x: torch.Tensor, goal: Goal, clean: torch.Tensor,
               rng: ImageStreams) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the adversarial batch and the model's scores on it (from queries made)."""

    def oracle_for(self, model: Victim) -> PredictModel:
        if isinstance(model, PredictModel):
            if self.needs == "probs" and model.output != "probs":
                raise ValueError(f"{self.name} is score-based and needs probabilities; this model answers with "
                                 "labels only (use hsj or boundary)")
            return model
        return from_classifier(model, self.needs)

    def victim(self, model: Victim) -> PredictModel:
        """The predict-only view: our model with its gradients hidden, or the given PredictModel."""
        return self.oracle_for(model)

    def clean_scores(self, victim: Victim, x: torch.Tensor, counter: Counter,
                     clean_logits: torch.Tensor | None) -> torch.Tensor:
        """The attacker's first query: what does the model say now? (Always asked: a black-box
        attacker has no logits of its own.)"""
        assert isinstance(victim, PredictModel)
        oracle = QueryCounter(victim, x.shape[0], self.query_budget(), x.device, used=counter.queries,
                              refused=self._refused(victim, counter, x))
        return oracle.query(x, torch.arange(x.shape[0], device=x.device))

    def solve(self, victim: Victim, x: torch.Tensor, goal: Goal, rng: ImageStreams, counter: Counter,
              clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`search` through a counter that tallies into ``counter.queries``; every returned
        image was queried, so its scores come from the search itself."""
        assert isinstance(victim, PredictModel)
        oracle = QueryCounter(victim, x.shape[0], self.query_budget(), x.device, used=counter.queries,
                              reference=clean, refused=self._refused(victim, counter, x))
        x_adv, scores = self.search(oracle, x, goal, clean, rng)
        return x_adv.detach(), scores

    @staticmethod
    def _refused(victim: PredictModel, counter: Counter, x: torch.Tensor) -> torch.Tensor | None:
        """The per-image tally of refused queries (extra ``refused``), for a model that may
        refuse them."""
        if not victim.may_refuse:
            return None
        tally = counter.extras.setdefault("refused", torch.zeros(x.shape[0], dtype=torch.int64, device=x.device))
        assert isinstance(tally, torch.Tensor)
        return tally

    def query_budget(self) -> int | None:
        """Queries per image, the clean one included (None: unlimited)."""
        budget = getattr(self.config, "queries", None)
        return None if budget is None else int(budget)
