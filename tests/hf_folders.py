"""A HuggingFace image classifier folder written by the tests themselves (random weights,
``save_pretrained``'s layout, the processor's JSON beside it; nothing from a hub)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


def make_hf_vit(folder: Path, *, size: int = 32, labels: tuple[str, ...] = ("normal", "pneumonia"),
                mean: float = 0.5, std: float = 0.5) -> Path:
    """A small ViT with random weights, saved as ``save_pretrained`` does (no hub)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=size, patch_size=size // 4, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, num_labels=len(labels),
                                 id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    transformers.ViTForImageClassification(cfg).save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"height": size, "width": size}, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [mean] * 3, "image_std": [std] * 3,
        "image_processor_type": "ViTImageProcessor"}))
    return folder
