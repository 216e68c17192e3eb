"""Architecture registry: networks that map a normalised image batch to logits.

Register with ``@register("name")``; a builder takes ``in_channels``, ``num_outputs`` and
optional keyword arguments and returns an ``nn.Module``. The contract test in
``tests/models`` builds and runs every registered architecture.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from medfool.errors import ConfigError

__all__ = ["Builder", "ResNet", "architectures", "build", "register", "resnet18", "small_cnn"]

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def wrap(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return wrap


def architectures() -> list[str]:
    return sorted(_REGISTRY)


def build(name: str, *, in_channels: int, num_outputs: int, **kwargs: Any) -> nn.Module:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown architecture {name!r}{hint} (known: {', '.join(architectures())})")
    try:
        return _REGISTRY[name](in_channels=in_channels, num_outputs=num_outputs, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"architecture {name!r}: bad options {kwargs} ({exc})") from None


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@register("small_cnn")
def small_cnn(*, in_channels: int, num_outputs: int, width: int = 32) -> nn.Module:
    """A VGG-style CNN, fast on two CPU cores: three stages of two 3x3 convs, global pooling.

    Works at any input size >= 8 px (28 to 96 px in practice) thanks to adaptive pooling.
    """
    w = width
    return nn.Sequential(
        _conv_bn(in_channels, w), _conv_bn(w, w), nn.MaxPool2d(2),          # H/2
        _conv_bn(w, 2 * w), _conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),        # H/4
        _conv_bn(2 * w, 4 * w), _conv_bn(4 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),                               # (N, 4w)
        nn.Dropout(0.2), nn.Linear(4 * w, num_outputs),
    )


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.body(x) + self.skip(x))
        return out


class ResNet(nn.Module):
    """ResNet (He et al. 2016) adapted to 28-64 px tiles: a 3x3 stem with no max-pool.

    The ImageNet stem (7x7 stride 2, then max-pool) would shrink a 28 px tile to 7 px before
    the first block; MedMNIST's own baselines make the same change.
    """

    def __init__(self, blocks: tuple[int, ...], *, in_channels: int, num_outputs: int, width: int = 64) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, width)
        layers: list[nn.Module] = []
        cin = width
        for i, n in enumerate(blocks):
            cout = width * 2**i
            for j in range(n):
                layers.append(_BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.layers(self.stem(x)))
        return out


@register("resnet18")
def resnet18(*, in_channels: int, num_outputs: int, width: int = 64) -> nn.Module:
    return ResNet((2, 2, 2, 2), in_channels=in_channels, num_outputs=num_outputs, width=width)
