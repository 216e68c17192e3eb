"""Query budgets: every query a black-box attack makes, counted per image.

Attacks never call a :class:`medfool.models.predict.PredictModel` directly: they go through a
:class:`QueryCounter`, which counts every query per image and refuses one past the budget.
"""

from __future__ import annotations

import math

import torch

from medfool.models.predict import PredictModel

__all__ = ["BudgetExceeded", "QueryCounter", "chunk_for"]


class BudgetExceeded(RuntimeError):
    """An attack asked for a query past an image's budget (a bug in the attack, not user error)."""


class QueryCounter:
    """Counts queries per image and enforces a per-image budget (None: unlimited).

    ``query(x, idx)`` evaluates images ``x`` that belong to attacked images ``idx`` (one query
    each); asking past an image's budget raises :class:`BudgetExceeded`, so an attack that
    respects ``remaining`` can never overspend, and one that does not fails loudly.
    """

    def __init__(self, model: PredictModel, n: int, budget: int | None, device: torch.device,
                 used: torch.Tensor | None = None, *, reference: torch.Tensor | None = None,
                 refused: torch.Tensor | None = None) -> None:
        """``used`` (n,) int64, when given, is the tally to count into (an attack's per-image
        query counter), updated in place.

        A served model may refuse a query (a stateful detector): its row comes back NaN. The
        attack then reads the image's clean scores (``reference`` (n, K)) for it, that is, no
        progress, so a refused query can never be taken for a success; ``refused`` (n,) int64
        counts them per image."""
        self.model = model
        self.budget = budget
        self.used = used if used is not None else torch.zeros(n, dtype=torch.int64, device=device)
        self.reference = reference
        self.refused = refused if refused is not None else torch.zeros(n, dtype=torch.int64, device=device)

    def remaining(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        left = (self.budget if self.budget is not None else 2**62) - self.used
        return left if idx is None else left[idx]

    def query(self, x: torch.Tensor, idx: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Pseudo-logits (see :meth:`PredictModel.scores`) for ``x``; ``idx`` (len(x),) names
        the attacked image each row belongs to (repeats allowed)."""
        counts = torch.bincount(idx, minlength=self.used.numel())
        if self.budget is not None and bool((self.used + counts > self.budget).any()):
            worst = int((self.used + counts).max())
            raise BudgetExceeded(f"query budget {self.budget} per image exceeded (an image would reach {worst})")
        self.used += counts
        if x.shape[0] <= chunk:
            scores = self.model.scores(x)
        else:
            scores = torch.cat([self.model.scores(x[s:s + chunk]) for s in range(0, x.shape[0], chunk)])
        if self.model.may_refuse:
            refused = torch.isnan(scores).any(1)
            if bool(refused.any()):
                self.refused.index_add_(0, idx[refused], torch.ones_like(idx[refused]))
                if self.reference is not None:
                    scores = torch.where(refused[:, None], self.reference[idx].to(scores), scores)
        return scores


def chunk_for(shape: tuple[int, ...]) -> int:
    """Rows per model call for candidates of ``shape`` (about 2^20 input values)."""
    return max(1, (1 << 20) // max(1, math.prod(shape)))
