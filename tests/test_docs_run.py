"""Every ``medfool ...`` command shown in README.md and docs/ runs and exits 0.

Each command runs as the page writes it, in page order (a later command reads what an earlier
one wrote: the README's ``train`` makes the model its ``evaluate`` reads, ``export`` the ONNX
file ``attack square`` attacks), with three things made small so that every page runs in a
couple of minutes:

- the datasets the commands name are miniature copies: the same file names, layout, sidecar
  and class names as the real files, a few dozen images of each class, made here (nothing is
  read from ../shared, so no command is skipped for missing data);
- a placeholder (MODEL, A, model.pt, path/to/hf-folder, ct-slices/, ...) stands for a small
  file the test writes: a model trained on the miniature data, TorchScript, a HuggingFace folder
  with random weights, DICOM phantoms;
- the options in ``SMALLER`` are appended (argparse takes the last value of an option), and
  audits and the demo get a short config.

A renamed option, a placeholder the docs forget to explain, or a command whose output a later
one needs but no longer finds fails here. What the commands measure is not checked: the
benchmarks do that at full size.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_folders import make_hf_vit
from medfool.cli.main import main
from medfool.data import load_dataset
from medfool.data.dicom import write_ct_phantoms
from medfool.models import save_checkpoint
from medfool.models.train import TrainConfig, fit
from test_docs import documented_commands

pytestmark = pytest.mark.slow

LUNG_CLASSES = ("lung adenocarcinoma", "benign lung tissue", "lung squamous cell carcinoma")

# appended to every command that starts with these words; each keeps a stage that runs, smaller
SMALLER: dict[tuple[str, ...], list[str]] = {
    ("train",): ["--epochs", "2"],
    ("attack",): ["--n", "4"],
    ("attack", "hsj"): ["--n", "2", "--queries", "300"],
    ("attack", "square"): ["--n", "4", "--queries", "100"],
    ("attack", "onepixel"): ["--n", "2", "-o", "population=20", "-o", "generations=2"],
    ("attack", "fooling"): ["--n", "2", "-o", "generations=2"],
    ("attack", "patch"): ["--n", "4", "--steps", "5", "--n-craft", "16"],
    ("attack", "cw"): ["--n", "4", "--steps", "5"],
    ("attack", "eot-pgd"): ["--n", "4", "--steps", "3"],
    ("analyze", "pixel-map"): ["--n", "1", "--stride", "7", "--samples", "0"],
    ("poison", "backdoor"): ["--epochs", "1", "--cleanse-steps", "10"],
    ("poison", "availability"): ["--epochs", "1", "--steps", "2"],
    ("defend", "adv-train"): ["--epochs", "1", "--steps", "2"],
    ("defend", "evaluate"): ["--n", "4", "--preset", "fast", "--eps", "8/255"],
    ("defend", "detector"): ["--n", "8", "--train-images", "32", "--steps", "3"],
    ("defend", "certify"): ["--n", "4", "--samples", "100"],
    ("wsi", "build"): ["--side", "512", "--benign", "1", "--malignant", "1", "--no-download"],
    ("wsi", "attack"): ["--max-tiles", "2", "--population", "20", "--generations", "2"],
    ("wsi", "audit"): ["--attacks", "pixels:1,patch:16"],
    ("generate", "train"): ["--epochs", "1", "--n", "8", "--no-download"],
}
# commands that read a dataset and so take --no-download (nothing is fetched in a test)
READS_DATA = {"train", "evaluate", "attack", "analyze", "audit", "poison", "defend", "demo"}


def smaller(argv: list[str], config: Path) -> list[str]:
    """The command with the options of its longest SMALLER key appended."""
    extra: list[str] = []
    for n in (2, 1):
        if tuple(argv[:n]) in SMALLER:
            extra = list(SMALLER[tuple(argv[:n])])
            break
    if argv[0] in ("audit", "demo") and not {"--print-config", "--estimate", "--config"} & set(argv):
        extra += ["--n", "8", "--config", str(config)]
    if argv[0] in READS_DATA and not (argv[0] == "defend" and argv[1] in ("transform", "ensemble")) \
            and "--print-config" not in argv:
        extra.append("--no-download")
    return argv + extra


# -- the miniature datasets -------------------------------------------------------------------
def _images(rng: np.random.Generator, labels: np.ndarray, size: int, channels: int, classes: int) -> np.ndarray:
    """Class k is brightness 100 + 10 k plus pixel noise: learnable in a few epochs (attacks get
    correctly classified images), and an 8/255 change can cross to the next class."""
    level = 100 + 10 * labels
    shape = (len(labels), size, size) + (() if channels == 1 else (channels,))
    noise = rng.normal(0, 20, shape)
    base = level.reshape((-1,) + (1,) * (len(shape) - 1))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _npz(path: Path, *, per_class: dict[str, int], size: int, channels: int, classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in per_class.items():
        labels = np.repeat(np.arange(classes), n)
        arrays[f"{split}_images"] = _images(rng, labels, size, channels, classes)
        arrays[f"{split}_labels"] = labels.astype(np.uint8).reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def miniature_data(root: Path) -> Path:
    """The files of ../shared/data, in miniature."""
    _npz(root / "medmnist" / "pneumoniamnist.npz", per_class={"train": 100, "val": 12, "test": 16}, size=28,
         channels=1, classes=2, seed=0)
    _npz(root / "medmnist" / "pathmnist.npz", per_class={"train": 16}, size=28, channels=3, classes=9, seed=1)
    for size in (28, 64):
        _npz(root / "lc25000" / f"lc25000_lung_{size}.npz", per_class={"train": 24, "val": 8, "test": 12},
             size=size, channels=3, classes=3, seed=2)
    (root / "lc25000" / "lc25000_lung.json").write_text(json.dumps({
        "name": "lc25000_lung", "task": "multi-class", "n_channels": 3,
        "label": dict(enumerate(LUNG_CLASSES)), "malignant_labels": [0, 2],
        "files": {"28": "lc25000_lung_28.npz", "64": "lc25000_lung_64.npz"}}))
    return root


# -- the placeholders -------------------------------------------------------------------------
def _model(dataset: str, seed: int, path: Path) -> Path:
    ds = load_dataset(dataset, allow_download=False)
    result = fit(ds, TrainConfig(epochs=6, batch_size=32, lr=1e-2, seed=seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(result.model, path, result.record)


def _torchscript(path: Path) -> Path:
    """A user's own network saved as TorchScript (what ``medfool describe`` is for)."""
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    torch.jit.trace(net, torch.rand(1, 1, 224, 224)).save(str(path))
    return path


def placeholders(work: Path, small_config: str) -> dict[str, Path]:
    """Placeholder word -> the file it stands for; MODEL is resolved per command by its -d."""
    models = {
        "pneumoniamnist": _model("pneumoniamnist", 0, work / "fixtures" / "pneu0.safetensors"),
        "pathmnist": _model("pathmnist", 0, work / "fixtures" / "path0.safetensors"),
        "lc25000_lung": _model("lc25000_lung", 0, work / "fixtures" / "lung0.safetensors"),
    }
    pneu1 = _model("pneumoniamnist", 1, work / "fixtures" / "pneu1.safetensors")
    pneu2 = _model("pneumoniamnist", 2, work / "fixtures" / "pneu2.safetensors")
    path1 = _model("pathmnist", 1, work / "fixtures" / "path1.safetensors")
    fixtures = work / "fixtures"
    ct = write_ct_phantoms(fixtures / "ct-slices", n=12, size=32, seed=0)
    hf = make_hf_vit(fixtures / "hf-folder", size=32, labels=("lesion", "normal"))
    assert main(["defend", "adv-train", "-d", "pneumoniamnist", "--method", "noise", "--sigma", "0.25",
                 "--epochs", "2", "--no-download", "--out", str(fixtures / "noise")]) == 0
    return {"MODEL:pneumoniamnist": models["pneumoniamnist"], "MODEL:pathmnist": models["pathmnist"],
            "MODEL:lc25000_lung": models["lc25000_lung"], "A": models["pneumoniamnist"], "B": pneu1, "C": pneu2,
            "OTHER_MODEL": path1, "D": Path("pneumoniamnist"), "ct-slices/": ct, "path/to/hf-folder": hf,
            "runs/path-s0/model.safetensors": models["pathmnist"], "runs/path-s1/model.safetensors": path1,
            "adv.safetensors": models["pneumoniamnist"], "noise.safetensors": fixtures / "noise" / "model.safetensors",
            "model.pt": _torchscript(fixtures / "model.pt"), "small.toml": _text(fixtures / "small.toml", small_config)}


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def named_dataset(argv: list[str], fixtures: dict[str, Path]) -> str | None:
    for flag in ("-d", "--dataset"):
        if flag in argv:
            named = argv[argv.index(flag) + 1]
            return str(fixtures.get(named, named))
    return None


def resolved(argv: list[str], fixtures: dict[str, Path], dataset: str) -> list[str]:
    """Placeholders replaced: MODEL by the model of ``dataset`` (the command's own, else the
    last one its page named), D by a dataset name, the others by their files."""
    out = []
    for word in argv:
        if word == "MODEL":
            word = str(fixtures.get(f"MODEL:{dataset}", fixtures["MODEL:pneumoniamnist"]))
        elif word in fixtures:
            word = str(fixtures[word])
        out.append(word)
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_text: str) -> Iterator[tuple[Path, dict[str, Path]]]:
    work = tmp_path_factory.mktemp("docs")
    data = miniature_data(work / "data")
    patch = pytest.MonkeyPatch()
    patch.setenv("MEDFOOL_DATA_DIR", str(data))
    patch.setenv("XDG_CACHE_HOME", str(work / "cache"))
    patch.chdir(work)
    try:
        yield work, placeholders(work, tiny_text)
    finally:
        patch.undo()


def test_every_documented_command_runs(workspace: tuple[Path, dict[str, Path]],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    work, fixtures = workspace
    failed, times = [], []
    last: dict[str, str] = {}
    for page, argv in documented_commands():
        (work / "pages" / page).mkdir(parents=True, exist_ok=True)
        os.chdir(work / "pages" / page)  # each page is read on its own, from an empty folder
        dataset = named_dataset(argv, fixtures) or last.get(page, "pneumoniamnist")
        last[page] = dataset
        command = smaller(resolved(argv, fixtures, dataset), fixtures["small.toml"])
        start = time.perf_counter()
        code = main(command)
        captured = capsys.readouterr()
        times.append((time.perf_counter() - start, f"{page}: medfool {' '.join(argv)}"))
        if code != 0:
            tail = (captured.err.strip().splitlines() or ["(no output)"])[-1]
            failed.append(f"{page}: medfool {' '.join(command)} -> exit {code}: {tail}")
    (work / "times.txt").write_text("".join(f"{s:7.1f} s  {label}\n" for s, label in sorted(times, reverse=True)))
    assert not failed, "documented commands that fail:\n" + "\n".join(failed)
