"""The networks users bring: MONAI architectures in the registry, HuggingFace folders,
``medfool.wrap`` and ``medfool describe``; each with the model's own preprocessing inside, so
attacks work on the data's [0, 1] pixels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import medfool
from hf_folders import make_hf_vit
from medfool.attacks import get_attack
from medfool.errors import CheckpointError, ConfigError
from medfool.models import build, load_classifier, save_checkpoint
from medfool.models.classifier import ModelMeta


def test_monai_vit_has_a_linear_head() -> None:
    """MONAI's default tanh would squash every logit into [-1, 1] (a flat loss that reads as
    robustness); the registry's ViT ends in a plain linear layer."""
    pytest.importorskip("monai")
    net = build("vit", in_channels=1, num_outputs=3, img_size=32).eval()
    assert not any(isinstance(m, nn.Tanh) for m in net.modules())
    assert float(net(torch.rand(4, 1, 32, 32) * 50).abs().max()) != pytest.approx(1.0)


def test_small_images_are_resized_inside_the_model(tmp_path: Path) -> None:
    pytest.importorskip("monai")
    from medfool.data import make_synthetic
    from medfool.models.train import TrainConfig, build_classifier

    ds = make_synthetic(size=28, seed=0)
    model = build_classifier(ds, TrainConfig(arch="densenet121"))
    assert model.meta.input_shape[1:] == (28, 28) and model.meta.network_input == (3, 64, 64)
    path = save_checkpoint(model, tmp_path / "dn.safetensors")
    loaded, _ = load_classifier(path)
    x = torch.rand(4, 3, 28, 28)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    with pytest.raises(ConfigError, match="at least 32 px"):
        TrainConfig(arch="densenet121", input_size=16)


def test_hf_folder_loads_with_its_own_preprocessing(tmp_path: Path) -> None:
    folder = make_hf_vit(tmp_path / "vit", mean=0.4, std=0.2)
    model, record = load_classifier(folder)
    assert model.meta.task == "binary" and model.meta.class_names == ("normal", "pneumonia")
    assert model.meta.network_input == (3, 32, 32) and model.meta.mean == pytest.approx((0.4,) * 3)
    assert record["source"] == "huggingface"
    # the same logits as transformers' own model fed the processor's output
    import transformers

    ref = transformers.ViTForImageClassification.from_pretrained(str(folder)).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(pixel_values=(x - 0.4) / 0.2).logits)
    # grey images at another size: resized and repeated to RGB inside, gradients reach the pixels
    model.meta = model.meta.for_input((1, 48, 48))
    g = torch.rand(2, 1, 48, 48, requires_grad=True)
    model(g).sum().backward()
    assert g.grad is not None and float(g.grad.abs().sum()) > 0


def test_hf_folder_errors(tmp_path: Path) -> None:
    folder = make_hf_vit(tmp_path / "vit")
    (folder / "model.safetensors").rename(tmp_path / "weights.safetensors")
    with pytest.raises(CheckpointError, match="no weights"):
        load_classifier(folder)
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="pickle, which medfool never loads"):
        load_classifier(folder)
    (folder / "pytorch_model.bin").unlink()
    other = make_hf_vit(tmp_path / "other", labels=("a", "b", "c"))
    (tmp_path / "weights.safetensors").rename(folder / "model.safetensors")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["hidden_size"] = 48
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"does not fit config\.json|not a loadable"):
        load_classifier(folder)
    assert load_classifier(other)[0].meta.task == "multi-class"
    one = load_classifier(make_hf_vit(tmp_path / "one", labels=("pneumonia",)))[0]
    assert (one.meta.task, one.meta.class_names, one.meta.num_outputs) == ("binary", ("not pneumonia", "pneumonia"), 1)


def test_wrap_puts_normalisation_inside_and_attacks_work() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    model = medfool.wrap(net, task="binary", classes=["normal", "pneumonia"], input_shape=(1, 28, 28), mean=0.5,
                         std=0.25)
    x = torch.rand(8, 1, 28, 28)
    torch.testing.assert_close(model(x), net((x - 0.5) / 0.25))
    y = model.predict(x)
    res = get_attack("pgd", eps=32 / 255, steps=10)(model, x, y)
    assert float(res.linf.max()) <= 32 / 255 + 1e-6 and bool(res.success.any())
    with pytest.raises(CheckpointError, match="gives 2 output"):
        medfool.wrap(net, task="multi-class", classes=["a", "b", "c"], input_shape=(1, 28, 28))


def test_describe_writes_a_checked_sidecar(tmp_path: Path, fails_cleanly) -> None:
    from medfool.cli.main import main

    net = build("small_cnn", in_channels=1, num_outputs=2, width=4)
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    torch.jit.save(torch.jit.script(net.eval()), str(tmp_path / "ts.pt"))
    assert main(["describe", str(tmp_path / "sd.pt"), "--task", "binary", "--classes", "normal,pneumonia",
                 "--input-shape", "1,28,28", "--mean", "0.5", "--std", "0.25", "--arch", "small_cnn",
                 "--arch-option", "width=4"]) == 0
    model, _ = load_classifier(tmp_path / "sd.pt")
    assert model.meta.class_names == ("normal", "pneumonia") and model.meta.arch_kwargs == {"width": 4}
    assert main(["describe", str(tmp_path / "ts.pt"), "--task", "binary", "--classes", "a,b",
                 "--input-shape", "1,28,28"]) == 0
    assert load_classifier(tmp_path / "ts.pt")[0].meta.num_outputs == 2
    # descriptions that do not match the weights: one line, exit 2, nothing written
    fails_cleanly(["describe", str(tmp_path / "sd.pt"), "--task", "binary", "--classes", "a,b", "--input-shape",
                   "1,28,28", "--arch", "small_cnn", "--out", str(tmp_path / "x.json")],
                  r"weights do not fit the metadata: network.0.0.weight is \(4, 1, 3, 3\)", tmp_path / "x.json")
    fails_cleanly(["describe", str(tmp_path / "ts.pt"), "--task", "multi-class", "--classes", "a,b,c",
                   "--input-shape", "1,28,28", "--out", str(tmp_path / "y.json")],
                  r"gives 2 output\(s\), the description says 3", tmp_path / "y.json")
    fails_cleanly(["describe", str(tmp_path / "ts.pt"), "--task", "binary", "--classes", "a,b",
                   "--input-shape", "3,28,28", "--out", str(tmp_path / "z.json")],
                  r"does not take images of shape \(3, 28, 28\).*channels", tmp_path / "z.json")


def test_loaded_sidecar_that_does_not_match_fails_cleanly(tmp_path: Path, fails_cleanly) -> None:
    net = build("small_cnn", in_channels=1, num_outputs=2, width=4)
    torch.save(net.state_dict(), tmp_path / "m.pt")
    meta = ModelMeta(task="binary", class_names=("a", "b"), input_shape=(1, 28, 28), mean=(0.5,), std=(0.25,),
                     num_outputs=2, arch="small_cnn", arch_kwargs={"width": 8})
    (tmp_path / "m.json").write_text(json.dumps(meta.to_json()))
    fails_cleanly(["info", str(tmp_path / "m.pt")], r"m.pt: weights do not fit the metadata")
