"""Checkpoints round-trip exactly; foreign and unsafe model files are handled safely."""

from __future__ import annotations

import json
import os

import pytest
import torch

from medfool.errors import CheckpointError, ConfigError
from medfool.models import Classifier, ModelMeta, build, load_classifier, save_checkpoint


def _model(arch="small_cnn", outputs=3, channels=3):
    torch.manual_seed(0)
    meta = ModelMeta(task="multi-class" if outputs > 2 else "binary",
                     class_names=tuple(f"c{i}" for i in range(max(outputs, 2))),
                     input_shape=(channels, 16, 16), mean=(0.5,) * channels, std=(0.25,) * channels,
                     num_outputs=outputs, critical_classes=(1,), arch=arch, arch_kwargs={"width": 8})
    return Classifier(build(arch, in_channels=channels, num_outputs=outputs, width=8), meta).eval()


def _meta_json(model, path):
    path.with_suffix(".json").write_text(json.dumps(model.meta.to_json()))


def test_normalisation_is_inside_the_model():
    model = _model()
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(model(x), model.network((x - 0.5) / 0.25))


def test_round_trip_is_exact(tmp_path):
    model = _model()
    path = save_checkpoint(model, tmp_path / "m.safetensors", {"seed": 7, "metrics": {"test": {"accuracy": 0.5}}})
    loaded, record = load_classifier(path)
    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(model(x), loaded(x))
    assert loaded.meta == model.meta and record["seed"] == 7
    assert not list(tmp_path.glob("*.part"))


def test_wrong_architecture(tmp_path):
    small = _model()
    mislabelled = Classifier(small.network, ModelMeta(**{**small.meta.__dict__, "arch": "resnet18"}))
    path = save_checkpoint(mislabelled, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match=r"m\.safetensors: weights do not fit architecture 'resnet18'"):
        load_classifier(path)


def test_truncated_checkpoint(tmp_path):
    path = save_checkpoint(_model(), tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(CheckpointError, match=r"m\.safetensors: not a readable safetensors file"):
        load_classifier(path)


class Payload:  # a pickled object that is not a tensor: weights_only must refuse it
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/medfool_pwned",))


def test_pickled_payload_is_refused(tmp_path):
    model = _model()
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": model.network.state_dict(), "x": Payload()}, path)
    _meta_json(model, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused: contains pickled objects"):
        load_classifier(path)
    assert not os.path.exists("/tmp/medfool_pwned")


def test_plain_state_dict_with_sidecar(tmp_path):
    model = _model()
    path = tmp_path / "plain.pth"
    torch.save(model.network.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"plain\.pth: has no medfool metadata; put a JSON file plain\.json"):
        load_classifier(path)
    _meta_json(model, path)
    loaded, _ = load_classifier(path)
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(model(x), loaded(x))


def test_torchscript_with_sidecar(tmp_path):
    model = _model()
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(model.network, torch.rand(1, 3, 16, 16)), str(path))
    meta = model.meta.to_json() | {"arch": None}
    path.with_suffix(".json").write_text(json.dumps(meta))
    loaded, _ = load_classifier(path)
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(model(x), loaded(x), atol=1e-5)


def test_meta_validation():
    with pytest.raises(ConfigError, match="must have 3 outputs, got 2"):
        ModelMeta(task="multi-class", class_names=("a", "b", "c"), input_shape=(1, 8, 8), mean=(0.0,), std=(1.0,),
                  num_outputs=2)
    with pytest.raises(ConfigError, match="mean/std need 3 values"):
        ModelMeta(task="binary", class_names=("a", "b"), input_shape=(3, 8, 8), mean=(0.0,), std=(1.0,),
                  num_outputs=1)


def test_binary_single_logit_predictions():
    meta = ModelMeta(task="binary", class_names=("neg", "pos"), input_shape=(1, 4, 4), mean=(0.0,), std=(1.0,),
                     num_outputs=1)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1))
    with torch.no_grad():
        net[1].weight.fill_(1.0)
        net[1].bias.fill_(-8.0)
    model = Classifier(net, meta)
    x = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])
    assert model.predict(x).tolist() == [0, 1]
    probs = model.probabilities(x)
    assert probs.shape == (2, 2) and torch.allclose(probs.sum(1), torch.ones(2))
