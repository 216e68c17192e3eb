"""Contract test over the architecture registry: every entry builds, runs and trains."""

from __future__ import annotations

import pytest
import torch

from medfool.errors import ConfigError
from medfool.models import architectures, build
from medfool.models.zoo import MIN_SIZE, NEEDS_SIZE


@pytest.mark.parametrize("name", architectures())
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 64)])
def test_every_architecture(name, channels, size):
    torch.manual_seed(0)
    if name == "ensemble":  # composite: its options are its members' metadata
        member = {"task": "multi-class", "class_names": list("abcde"), "input_shape": [channels, size, size],
                  "mean": [0.5] * channels, "std": [0.25] * channels, "num_outputs": 5, "arch": "small_cnn",
                  "arch_kwargs": {"width": 8}}
        net = build(name, in_channels=channels, num_outputs=5, members=[member, member])
    elif name in MIN_SIZE:  # MONAI's networks: no width option, a smallest input, the ViT's size fixed at build
        size = max(size, MIN_SIZE[name])
        net = build(name, in_channels=channels, num_outputs=5, **({"img_size": size} if name in NEEDS_SIZE else {}))
    else:
        net = build(name, in_channels=channels, num_outputs=5, width=8)
    x = torch.randn(4, channels, size, size)
    out = net(x)
    assert out.shape == (4, 5) and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_unknown_architecture_suggests():
    with pytest.raises(ConfigError, match="unknown architecture 'resnet19'; did you mean 'resnet18'"):
        build("resnet19", in_channels=3, num_outputs=2)


def test_bad_architecture_option():
    with pytest.raises(ConfigError, match="bad options"):
        build("small_cnn", in_channels=3, num_outputs=2, depth=3)
