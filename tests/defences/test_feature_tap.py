"""Deep features are the same inside ``Classifier.padded`` (how every attack runs the model) as
outside: the padded forward runs fixed-size chunks with zero images appended, and the taps must
join the chunks and drop the padding."""

from __future__ import annotations

from pathlib import Path

import torch

from medfool.defences.stateful import feature_encoder
from medfool.models import load_classifier
from medfool.models.features import FeatureTap


def test_features_inside_a_padded_forward_match(tiny_model: Path) -> None:
    model, _ = load_classifier(str(tiny_model))
    tap, encode = FeatureTap(model), feature_encoder(model)
    for n in (5, 70):  # one chunk, padded; several chunks
        x = torch.rand(n, 3, 28, 28, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            f, layers, _ = tap(x)
            e = encode(x)
            with model.padded():
                fp, layers_p, _ = tap(x)
                ep = encode(x)
        assert fp.shape == f.shape and ep.shape == e.shape == (n, e.shape[1])
        assert torch.allclose(fp, f, atol=1e-5) and torch.allclose(ep, e, atol=1e-5)
        assert [a.shape for a in layers_p] == [a.shape for a in layers]
