"""The networks users train on, from MONAI (an optional extra: ``pip install 'medfool[monai]'``).

Registered in the same architecture registry as our own CNNs, so ``medfool train --arch
densenet121`` trains one, a checkpoint saves its weights, and every attack, defence and audit
takes it. MONAI is imported only when one of them is built; it needs torch and numpy, never
torchvision, and nothing here downloads pretrained weights.

These networks downsample 32 times (the ViT by its patch size): they need inputs of at least
:data:`MIN_SIZE` pixels. Smaller images (MedMNIST's 28 px) are resized inside the model
(``ModelMeta.network_size``), so the attack still works on the data's own pixels.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

import torch
from torch import nn

from medfool.errors import ConfigError
from medfool.models.architectures import register

__all__ = ["DEFAULT_SIZE", "MIN_SIZE", "NEEDS_SIZE", "ZOO_EMA", "ZOO_LR", "ZOO_WEIGHT_DECAY", "in_zoo", "min_size"]

# what a network too big for the data's images gets by default (MedMNIST's 28 px -> 64 px)
DEFAULT_SIZE = 64

# the smallest input (pixels, square) each network accepts; our own CNNs take 8 px and up
MIN_SIZE = {"densenet121": 32, "monai_resnet18": 32, "resnet50": 32, "efficientnet_b0": 32, "vit": 32}
# builders that must know the input size when they are built (position embeddings)
NEEDS_SIZE = {"vit"}


# Training defaults for these networks, trained from scratch: millions of weights on a few
# thousand medical images memorise the training split within a few epochs, and their
# validation accuracy swings by points from epoch to epoch. DenseNet-121 on LC25000 lung
# (64 px, seed 0): medfool's CNN defaults (lr 3e-3, decay 5e-4, no average) give test accuracy
# 0.942; these (lr 1e-3, decay 0.05, random shifts, an average over the last ~100 steps) 0.958.
ZOO_LR = 1e-3
ZOO_WEIGHT_DECAY = 0.05  # the usual AdamW setting for ImageNet-size networks
ZOO_EMA = 0.99


def min_size(arch: str) -> int:
    return MIN_SIZE.get(arch, 8)


def in_zoo(arch: str) -> bool:
    """Whether ``arch`` is one of these large networks (not medfool's own small-image CNNs)."""
    return arch in MIN_SIZE


def _monai_nets() -> ModuleType:
    try:
        return import_module("monai.networks.nets")
    except ImportError:
        raise ConfigError("this architecture comes from MONAI, which is not installed: "
                          "pip install 'medfool[monai]' (or: pip install 'monai>=1.6')") from None


@register("densenet121")
def densenet121(*, in_channels: int, num_outputs: int, dropout: float = 0.0) -> nn.Module:
    """DenseNet-121 (Huang et al., CVPR 2017), MONAI's 2-D implementation; 7.0 M parameters."""
    net: nn.Module = _monai_nets().DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=num_outputs,
                                                dropout_prob=dropout)
    return net


@register("monai_resnet18")
def monai_resnet18(*, in_channels: int, num_outputs: int) -> nn.Module:
    """ResNet-18 (He et al., CVPR 2016) as MONAI builds it (7x7 stem, max pool), 11.2 M
    parameters; ``resnet18`` is medfool's own small-image variant (3x3 stem, no pool)."""
    net: nn.Module = _monai_nets().resnet18(spatial_dims=2, n_input_channels=in_channels, num_classes=num_outputs)
    return net


@register("resnet50")
def resnet50(*, in_channels: int, num_outputs: int) -> nn.Module:
    """ResNet-50 (He et al., CVPR 2016), MONAI's implementation; 23.5 M parameters."""
    net: nn.Module = _monai_nets().resnet50(spatial_dims=2, n_input_channels=in_channels, num_classes=num_outputs)
    return net


@register("efficientnet_b0")
def efficientnet_b0(*, in_channels: int, num_outputs: int) -> nn.Module:
    """EfficientNet-B0 (Tan and Le, ICML 2019), MONAI's implementation, no pretrained weights."""
    net: nn.Module = _monai_nets().EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2,
                                                  in_channels=in_channels, num_classes=num_outputs)
    return net


class _FirstOutput(nn.Module):
    """MONAI's classifying ViT returns (logits, hidden states); attacks need the logits alone."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)[0]
        return out


@register("vit")
def vit(*, in_channels: int, num_outputs: int, img_size: int = 224, patch_size: int = 16, hidden_size: int = 384,
        num_layers: int = 6, num_heads: int = 6) -> nn.Module:
    """Vision Transformer (Dosovitskiy et al., ICLR 2021), MONAI's implementation; by default a
    small one (6 layers of width 384). Its classification head ends in a plain linear layer:
    MONAI's default tanh would squash every logit into [-1, 1], which flattens the loss an
    attack climbs and reads as robustness it is not."""
    if img_size % patch_size:
        raise ConfigError(f"vit: the input size {img_size} must be a multiple of the patch size {patch_size}")
    net = _monai_nets().ViT(in_channels=in_channels, img_size=img_size, patch_size=patch_size,
                            hidden_size=hidden_size, mlp_dim=4 * hidden_size, num_layers=num_layers,
                            num_heads=num_heads, classification=True, num_classes=num_outputs, spatial_dims=2,
                            post_activation=None)
    for block in net.blocks:  # MONAI builds a cross-attention norm it never uses: dead weights
        if not getattr(block, "with_cross_attention", True):
            block.norm_cross_attn = nn.Identity()
    return _FirstOutput(net)
