"""Input-transform defences: layers that clean an image in [0, 1] before the network sees it.

A defended model is a model: a :class:`~medfool.models.classifier.Classifier` whose metadata
lists ``preprocess`` specs (``{"name": "jpeg", "quality": 75}``) applies them in ``forward``,
saves and loads like any checkpoint, and every attack, the audit and ``medfool export`` take it.

Each layer has two gradients. Deployed (``bpda`` off) it is what the defence computes, so a
naive attacker differentiates through JPEG or bit-depth rounding and gets zeros almost
everywhere: the gradient masking of Athalye, Carlini & Wagner (ICML 2018). The adaptive
attacker turns ``bpda`` on (``Classifier.adaptive()``): the forward pass is unchanged and the
backward pass is the identity's (Backward Pass Differentiable Approximation). Random layers
draw per image from a key of the image's own pixels when deployed (so an answer never depends
on the batch) and fresh per call under EOT.

* ``median`` (size 3): the natural answer to one- and few-pixel attacks; Xu et al. NDSS 2018.
* ``jpeg`` (quality 75): Dziugaite et al. 2016; Guo et al. ICLR 2018.
* ``bit-depth`` (bits 4): Xu, Evans & Qi, "Feature squeezing", NDSS 2018.
* ``blur`` (sigma 1): Gaussian smoothing (differentiable; its own gradient is exact).
* ``resize-pad`` (max_shrink 4): Xie et al., "Mitigating adversarial effects through
  randomization", ICLR 2018: shrink by a random 0..max_shrink pixels, pad back at a random offset.
* ``stain-norm``: Macenko et al., "A method for normalizing histology slides for quantitative
  analysis", ISBI 2009: every tile's H&E stain vectors and concentrations mapped to a reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medfool.errors import ConfigError
from medfool.utils.imageops import content_keys, jpeg_quantise, mix_keys, straight_through

__all__ = ["PREPROCESS", "AdaptiveLayer", "InputTransform", "build_preprocess", "check_spec", "parse_spec"]


class AdaptiveLayer(nn.Module):
    """A layer with a deployed gradient and an adaptive attacker's (``bpda``) gradient; random
    layers also take fresh randomness under EOT."""

    random = False

    def __init__(self) -> None:
        super().__init__()
        self.bpda = False
        self.fresh = False  # EOT: fresh random draws on every call
        self.draw = 0  # under EOT, which draw this is (the classifier numbers its calls and draws)

    @property
    def adapts(self) -> bool:
        """Whether the adaptive attacker sees this layer otherwise than deployed (BPDA, EOT, a
        surrogate); False for a layer whose own gradient is already exact."""
        return True


class InputTransform(AdaptiveLayer):
    """An input-space defence; ``spec`` is what the model's metadata stores."""

    name = ""

    def __init__(self, **options: float) -> None:
        super().__init__()
        self.options = options

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


class Median(InputTransform):
    name = "median"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = int(self.options["size"])
        n, c, h, w = x.shape
        cols = F.unfold(F.pad(x, (k // 2,) * 4, mode="reflect"), k)           # (n, c*k*k, h*w)
        out = cols.view(n, c, k * k, h * w).median(dim=2).values.view(n, c, h, w)
        return straight_through(x, out) if self.bpda else out


class Jpeg(InputTransform):
    name = "jpeg"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quality = torch.full((x.shape[0],), int(self.options["quality"]))
        return jpeg_quantise(x, quality, bpda=self.bpda)


class BitDepth(InputTransform):
    name = "bit-depth"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2 ** int(self.options["bits"]) - 1
        out = torch.round(x * levels) / levels
        return straight_through(x, out) if self.bpda else out


class Blur(InputTransform):
    name = "blur"

    @property
    def adapts(self) -> bool:
        return False  # differentiable: its own gradient is exact, BPDA would change nothing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sigma = float(self.options["sigma"])
        size = 2 * max(1, round(2 * sigma)) + 1
        ax = torch.arange(size, device=x.device, dtype=x.dtype) - size // 2
        k1 = torch.exp(-(ax**2) / (2 * sigma**2))
        k1 = k1 / k1.sum()
        c = x.shape[1]
        kernel = (k1[:, None] * k1[None, :]).expand(c, 1, size, size)
        return F.conv2d(F.pad(x, (size // 2,) * 4, mode="reflect"), kernel, groups=c)


class ResizePad(InputTransform):
    name = "resize-pad"
    random = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        shrink = int(self.options["max_shrink"])
        keys = content_keys(x).cpu()
        draws = mix_keys(keys, self.draw) if self.fresh else keys
        out = torch.empty_like(x)
        size = (draws % (shrink + 1)).tolist()
        top, left = ((draws // 7) % 10_007).tolist(), ((draws // 70_049) % 10_007).tolist()
        # one interpolation and one gather per distinct size (at most max_shrink + 1), not per
        # image: replicate padding at offset (t, le) reads the small image at clamped indices
        for s in set(size):
            rows = torch.tensor([i for i, v in enumerate(size) if v == s], device=x.device)
            small = F.interpolate(x[rows], size=(h - s, w - s), mode="bilinear", align_corners=False)
            t = torch.tensor([top[i] % (s + 1) for i in rows.tolist()], device=x.device)
            le = torch.tensor([left[i] % (s + 1) for i in rows.tolist()], device=x.device)
            r = (torch.arange(h, device=x.device)[None] - t[:, None]).clamp(0, h - s - 1)   # (n, h)
            c = (torch.arange(w, device=x.device)[None] - le[:, None]).clamp(0, w - s - 1)  # (n, w)
            index = (r[:, :, None] * (w - s) + c[:, None, :]).view(rows.numel(), 1, h * w)
            out[rows] = small.flatten(2).gather(2, index.expand(-1, x.shape[1], -1)).view(-1, x.shape[1], h, w)
        return out


class StainNorm(InputTransform):
    """Macenko normalisation per tile: background pixels (optical density below ``beta``)
    are left out, the two stain vectors come from the extreme angles (``alpha`` and 100 -
    ``alpha`` percentiles) in the plane of the two main eigenvectors of the OD covariance, the
    concentrations' 99th percentiles are scaled to the reference's. RGB only."""

    name = "stain-norm"
    # reference H&E stain vectors (OD, rows: haematoxylin, eosin) and maximum concentrations
    # from Macenko's reference implementation
    REF = torch.tensor([[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]])
    REF_MAX = torch.tensor([1.9705, 1.0308])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 3:
            return x
        out = torch.stack([self._one(img) for img in x])
        return straight_through(x, out) if self.bpda else out

    def _one(self, img: torch.Tensor) -> torch.Tensor:
        alpha, beta = float(self.options["alpha"]), float(self.options["beta"])
        c, h, w = img.shape
        od = -torch.log(img.clamp_min(1 / 255)).reshape(3, -1)                 # (3, P)
        tissue = od[:, (od > beta).all(dim=0)]
        if tissue.shape[1] < 10:  # almost all background: nothing to normalise
            return img
        _, vecs = torch.linalg.eigh(torch.cov(tissue))
        plane = vecs[:, 1:3]                                                     # two largest
        proj = plane.T @ tissue
        phi = torch.atan2(proj[1], proj[0])
        lo, hi = torch.quantile(phi, alpha / 100), torch.quantile(phi, 1 - alpha / 100)
        v1 = plane @ torch.stack([torch.cos(lo), torch.sin(lo)])
        v2 = plane @ torch.stack([torch.cos(hi), torch.sin(hi)])
        stains = torch.stack([v1, v2]) if v1[0] > v2[0] else torch.stack([v2, v1])  # haematoxylin first
        stains = stains * torch.sign(stains.sum(dim=1, keepdim=True))             # positive OD
        conc = torch.linalg.lstsq(stains.T, od).solution                           # (2, P)
        maxc = torch.quantile(conc, 0.99, dim=1).clamp_min(1e-6)
        conc = conc * (self.REF_MAX.to(img) / maxc)[:, None]
        return torch.exp(-(self.REF.to(img).T @ conc)).reshape(c, h, w).clamp(0, 1)


# name -> (class, default options, allowed ranges)
PREPROCESS: dict[str, tuple[type[InputTransform], dict[str, float], dict[str, tuple[float, float]]]] = {
    "median": (Median, {"size": 3}, {"size": (3, 9)}),
    "jpeg": (Jpeg, {"quality": 75}, {"quality": (1, 100)}),
    "bit-depth": (BitDepth, {"bits": 4}, {"bits": (1, 8)}),
    "blur": (Blur, {"sigma": 1.0}, {"sigma": (0.1, 5.0)}),
    "resize-pad": (ResizePad, {"max_shrink": 4}, {"max_shrink": (1, 64)}),
    "stain-norm": (StainNorm, {"alpha": 1.0, "beta": 0.15}, {"alpha": (0.1, 10.0), "beta": (0.0, 1.0)}),
}


def check_spec(spec: Mapping[str, Any]) -> dict[str, float]:
    """The options of one preprocess spec with defaults filled in; ConfigError if it is bad."""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(f"a preprocess step must be an object with a 'name', got {spec!r}")
    name = spec["name"]
    if name not in PREPROCESS:
        raise ConfigError(f"unknown input transform {name!r} (known: {', '.join(PREPROCESS)})")
    _, defaults, ranges = PREPROCESS[name]
    unknown = set(spec) - {"name"} - set(defaults)
    if unknown:
        raise ConfigError(f"input transform {name!r} has no option(s) {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(defaults) or 'none'})")
    options = {**defaults, **{k: v for k, v in spec.items() if k != "name"}}
    for key, value in options.items():
        lo, hi = ranges[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise ConfigError(f"input transform {name!r}: {key} must be a number in [{lo:g}, {hi:g}], got {value!r}")
        if key in ("size", "quality", "bits", "max_shrink") and value != int(value):
            raise ConfigError(f"input transform {name!r}: {key} must be a whole number, got {value!r}")
    if name == "median" and int(options["size"]) % 2 == 0:
        raise ConfigError(f"input transform 'median': size must be odd, got {options['size']}")
    return options


def build_preprocess(specs: Sequence[Mapping[str, Any]]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for spec in specs:
        options = check_spec(spec)
        cls = PREPROCESS[spec["name"]][0]
        layers.append(cls(**options))
    return nn.Sequential(*layers)


def parse_spec(text: str, parse_value: Callable[[str], float] = float) -> dict[str, Any]:
    """'jpeg:quality=60' or 'median' -> {'name': 'jpeg', 'quality': 60.0} (checked)."""
    name, _, rest = text.partition(":")
    spec: dict[str, Any] = {"name": name.strip()}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            raise ConfigError(f"input transform option must be KEY=VALUE, got {part!r} in {text!r}")
        try:
            number = parse_value(value)
        except ValueError:
            raise ConfigError(f"input transform option {key}: not a number: {value!r}") from None
        spec[key.strip().replace("-", "_")] = int(number) if number == int(number) else number
    check_spec(spec)
    return spec
