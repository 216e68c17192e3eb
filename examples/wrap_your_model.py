"""Wrap your own PyTorch network as a medfool model, attack it, save it for the command line.

    python examples/wrap_your_model.py [--out DIR]

A network that takes normalised images stays as it is: ``wrap`` (``medfool.wrap``) puts the
normalisation inside the model, so attacks work on [0, 1] pixels and epsilons read as k/255.
The network here is trained for a few seconds on medfool's synthetic images (no download);
use your own trained network in its place.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

from medfool.attacks import get_attack
from medfool.data import load_dataset
from medfool.models import load_classifier
from medfool.models.wrap import describe, wrap  # wrap is also medfool.wrap
from medfool.utils.io import atomic_write_json


class MyNet(nn.Module):
    """Any network of yours: normalised images (N, 3, 28, 28) in, one logit per class out."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(32, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="where to save the checkpoint (default: a temporary folder)")
    args = ap.parse_args()
    torch.manual_seed(0)

    ds = load_dataset("synthetic")  # 3 classes of 3x28x28 images in [0, 1]
    classes = list(ds.info.class_names)
    net = MyNet(len(classes))
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]  # the normalisation your network was trained with

    # a few seconds of training in normalised space, as your own training script would do it
    train = ds.split("train")
    x_train, y_train = train.get(range(len(train)))
    norm = (x_train - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(norm), y_train).backward()
        opt.step()

    model = wrap(net.eval(), task="multi-class", classes=classes, input_shape=(3, 28, 28), mean=mean, std=std)
    test = ds.split("test")
    x, y = test.get(range(min(64, len(test))))
    clean = (model.predict(x) == y).float().mean().item()
    print(f"clean accuracy {clean:.1%} on {len(y)} test images")
    for k in (4, 16, 32):
        result = get_attack("pgd", eps=k / 255, steps=10)(model, x, y, seed=0)
        print(f"PGD-10 at {k}/255 fools {result.success_rate:.1%} of the images the model read correctly")

    # for the command line: the network as TorchScript and its description beside it (what
    # `medfool describe` writes); medfool loads it without unpickling anything
    out = args.out or Path(tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    path = out / "mynet.pt"
    torch.jit.trace(net, torch.zeros(1, 3, 28, 28)).save(str(path))
    meta = describe(path, task="multi-class", classes=classes, input_shape=(3, 28, 28), mean=mean, std=std)
    atomic_write_json(path.with_suffix(".json"), meta.to_json())
    again, _ = load_classifier(path)
    assert torch.equal(again.predict(x), model.predict(x))
    print(f"saved {path} and {path.with_suffix('.json').name}: every command takes it, "
          f"e.g. medfool attack pgd -m {path} -d synthetic --eps 16/255")

if __name__ == "__main__":
    main()
