"""The attacker who knows the service watches its stream: re-shape a refused query and send it
again (after Feng et al., "Stateful defenses for machine learning models are not yet secure
against black-box attacks", CCS 2023, whose OARS attacks adapt to the rejection signal).

Stateful detectors match a query against earlier ones (Blacklight's hashes of quantised pixel
windows; the k-NN distance of Chen et al.). A refused query is re-sent with uniform noise added,
growing by ``grow`` each time it is refused again (up to ``tries`` times), kept inside the
attack's L-inf ball around the clean image when one is given. The re-shaped image is written
back into the query the attack made (the attacks keep the images they queried, so an accepted
step carries the re-shaping on, and later queries drift away from the ones already matched);
every success is still judged on the deployed model reading the image the attack returns.
The re-sends are queries the server sees but the attack's per-image budget does not count: the
wrapper's ``resent`` does (benchmarks/range_detection.py adds them to the attack's queries).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medfool.models.predict import PredictModel

__all__ = ["Reshaper", "reshaping"]


@dataclass
class Reshaper:
    start: float = 4 / 255
    grow: float = 2.0
    tries: int = 4
    resent: int = 0      # queries sent again
    still_refused: int = 0


def reshaping(victim: PredictModel, gen: torch.Generator, *, x0: torch.Tensor | None = None,
              eps: float | None = None, reshaper: Reshaper | None = None) -> tuple[PredictModel, Reshaper]:
    """``victim`` with refused queries re-shaped and re-sent; ``x0`` (C, H, W), the one image
    under attack, and ``eps`` bound the noise to the attack's L-inf ball."""
    if x0 is not None and x0.dim() != 3:
        raise ValueError(f"x0 is the one image under attack, (C, H, W); got shape {tuple(x0.shape)}")
    state = reshaper or Reshaper()

    def predict(x: torch.Tensor) -> torch.Tensor:
        out = victim.predict(x).float()
        scale = state.start
        for _ in range(state.tries):
            refused = torch.isnan(out.reshape(out.shape[0], -1)).any(1)
            if not bool(refused.any()):
                break
            xr = x[refused]
            noise = (torch.rand(xr.shape, generator=gen) * 2 - 1).to(xr) * scale
            xr = (xr + noise).clamp(0, 1)
            if x0 is not None and eps is not None:
                xr = torch.minimum(torch.maximum(xr, x0 - eps), x0 + eps).clamp(0, 1)
            state.resent += int(refused.sum())
            try:
                x[refused] = xr  # the attack's own query tensor: it now holds what will be answered
            except RuntimeError:  # an expanded (shared-memory) query cannot change: it stays refused
                break
            out = out.clone()
            out[refused] = victim.predict(xr).float()
            scale *= state.grow
        state.still_refused += int(torch.isnan(out.reshape(out.shape[0], -1)).any(1).sum())
        return out

    return PredictModel(predict, victim.meta, victim.output, victim.device, may_refuse=True), state
