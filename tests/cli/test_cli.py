"""The command line: help everywhere, one clear line and exit code 2 for every user error."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from medfool.cli.main import build_parser, main

SUBCOMMANDS = ["demo", "datasets", "download", "train", "evaluate", "info", "attack", "analyze", "audit", "report",
               "export", "poison", "defend", "describe", "range", "wsi", "generate"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert "usage: medfool" in capsys.readouterr().out


def test_every_subcommand_is_tested():
    actions = [a for a in build_parser()._subparsers._group_actions]  # type: ignore[union-attr]
    assert sorted(actions[0].choices) == sorted(SUBCOMMANDS)



def _train(tmp_path, dataset, *extra):
    return ["train", "-d", str(dataset), "--epochs", "1", "--width", "4", "--out", str(tmp_path / "run"), *extra]


@pytest.mark.parametrize(("builder", "pattern"), [
    (lambda p, mk: (p.write_bytes(b"garbage"), p)[1], r"bad\.npz: not a readable \.npz file"),
    (lambda p, mk: mk("bad.npz", test_labels=None), r"bad\.npz: has 'test_images' but is missing key 'test_labels'"),
    (lambda p, mk: mk("bad.npz", train_images=np.full((40, 8, 8, 3), np.nan, np.float32)), "NaN"),
    (lambda p, mk: mk("bad.npz", train_images=np.zeros((40, 8, 8, 5), np.uint8)), "images must have shape"),
    (lambda p, mk: mk("bad.npz", val_images=np.zeros((0, 8, 8, 3), np.uint8), val_labels=np.zeros((0, 1))),
     r"\[val\]: the split is empty"),
], ids=["corrupt", "missing-key", "nan", "shape", "empty-split"])
def test_train_bad_data(tmp_path, capsys, make_npz, builder, pattern, fails_cleanly):
    path = builder(tmp_path / "bad.npz", make_npz)
    fails_cleanly(_train(tmp_path, path), pattern)
    assert not (tmp_path / "run").exists()


def test_train_labels_out_of_range(tmp_path, capsys, make_npz, fails_cleanly):
    import json

    path = make_npz("bad.npz", classes=3)
    path.with_suffix(".json").write_text(json.dumps({"task": "binary", "label": ["a", "b"]}))
    fails_cleanly(_train(tmp_path, path), r"labels must be in \[0, 1\] for 2 classes")


def test_train_unreadable_image_folder(tmp_path, capsys, fails_cleanly):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / c / f"{i}.png")
    (tmp_path / "imgs" / "b" / "x.jpg").write_bytes(b"not a jpeg")
    fails_cleanly(_train(tmp_path, tmp_path / "imgs"), r"x\.jpg: unreadable image")


def test_train_evaluate_info_round_trip(tmp_path, capsys):
    assert main(_train(tmp_path, "synthetic")) == 0
    out = capsys.readouterr().out
    assert "synthetic: test accuracy" in out
    ckpt = tmp_path / "run" / "model.safetensors"
    assert ckpt.is_file() and (tmp_path / "run" / "metrics.json").is_file()
    assert not list((tmp_path / "run").glob("*.part"))
    assert main(["evaluate", "-m", str(ckpt), "-d", "synthetic"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["info", str(ckpt)]) == 0
    assert "small_cnn" in capsys.readouterr().out


def test_evaluate_on_mismatched_dataset(tmp_path, capsys, make_npz, fails_cleanly):
    assert main(_train(tmp_path, "synthetic")) == 0
    capsys.readouterr()
    other = make_npz("gray.npz", channels=1, size=28)
    fails_cleanly(["evaluate", "-m", str(tmp_path / "run" / "model.safetensors"), "-d", str(other)],
                   r"model expects images \(3, 28, 28\).*has \(1, 28, 28\)")


def test_bad_checkpoints(tmp_path, capsys, fails_cleanly):
    import torch

    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "o": os.getcwd}, evil)
    (tmp_path / "evil.json").write_text('{"task": "binary", "class_names": ["a", "b"], "input_shape": [1, 8, 8], '
                                        '"mean": [0], "std": [1], "num_outputs": 2, "arch": "small_cnn"}')
    fails_cleanly(["info", str(evil)], r"evil\.pt: refused: contains pickled objects")
    trunc = tmp_path / "t.safetensors"
    trunc.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    fails_cleanly(["info", str(trunc)], r"t\.safetensors: not a readable safetensors file")


def test_unwritable_output(tmp_path, capsys, fails_cleanly):
    if os.geteuid() == 0:
        (tmp_path / "file").write_text("x")
        fails_cleanly([*_train(tmp_path, "synthetic")[:-2], "--out", str(tmp_path / "file")],
                       "exists and is not a folder")
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        fails_cleanly([*_train(tmp_path, "synthetic")[:-2], "--out", str(ro / "x")], "not writable")


def test_unknown_dataset_and_bad_option(capsys, fails_cleanly):
    fails_cleanly(["train", "-d", "pathmnst"], "did you mean 'pathmnist'")
    fails_cleanly(["train", "-d", "synthetic", "--epochs", "0"], "argument --epochs: must be >= 1, got 0")


@pytest.mark.slow
def test_console_script_exit_code(tmp_path):
    """The installed entry point: no traceback, exit 2, one line on stderr."""
    proc = subprocess.run([sys.executable, "-m", "medfool.cli.main", "evaluate", "-m", str(tmp_path / "no.pt"),
                           "-d", "synthetic"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"medfool: error: {tmp_path / 'no.pt'}: no such model file"]


def test_train_stain_augmentation_on_grayscale_is_refused(tmp_path, capsys, make_npz, fails_cleanly):
    """H&E stain jitter means nothing for one channel: a silent no-op would train something
    other than what was asked."""
    path = make_npz("gray.npz", channels=1)
    fails_cleanly(_train(tmp_path, path, "--augment", "shift+stain"),
                  r"augment stain: H&E stain jitter needs RGB images; gray has 1 channel")
    assert not (tmp_path / "run").exists()


# -- --model takes the folder 'medfool train --out' writes -------------------------------------
MODEL_OPTIONS = ("model", "surrogate", "baseline")


def _parsers(parser):
    """Every (sub)parser of the command line, depth first."""
    yield parser
    for action in parser._actions:
        if action.choices and isinstance(action.choices, dict):
            for sub in action.choices.values():
                yield from _parsers(sub)


def _run_folder(tiny_model, tmp_path):
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_model, run / "model.safetensors")
    (run / "metrics.json").write_text("{}")
    return run


def test_every_model_option_resolves_a_run_folder(tiny_model, tmp_path):
    run = _run_folder(tiny_model, tmp_path)
    found = []
    for parser in _parsers(build_parser()):
        for action in parser._actions:
            if action.dest in MODEL_OPTIONS and parser.prog != "medfool describe":  # describe writes a file's sidecar
                found.append(parser.prog)
                assert action.type is not None, f"{parser.prog} --{action.dest}"
                assert action.type(str(run)) == str(run / "model.safetensors"), f"{parser.prog} --{action.dest}"
    assert {"medfool evaluate", "medfool info", "medfool attack", "medfool audit", "medfool export",
            "medfool defend certify", "medfool defend ensemble", "medfool analyze"} <= set(found)


@pytest.mark.parametrize("argv", [
    ["evaluate", "-m", "{run}", "-d", "synthetic"],
    ["info", "{run}"],
    ["attack", "fgsm", "-m", "{run}", "-d", "synthetic", "--n", "4", "--eps", "8/255", "--out", "{tmp}/a"],
    ["defend", "transform", "-m", "{run}", "-t", "median", "-o", "{tmp}/median.safetensors"],
], ids=["evaluate", "info", "attack", "defend-transform"])
def test_model_option_takes_the_folder_train_writes(tiny_model, tmp_path, argv):
    run = _run_folder(tiny_model, tmp_path)
    assert main([a.format(run=run, tmp=tmp_path) for a in argv]) == 0


def test_a_model_folder_without_model_safetensors_is_one_line(tiny_model, tmp_path, capsys, fails_cleanly):
    empty = tmp_path / "empty"
    empty.mkdir()
    fails_cleanly(["evaluate", "-m", str(empty), "-d", "synthetic"], r"empty: a folder without model\.safetensors")
    fails_cleanly(["info", str(empty)], r"empty: a folder without model\.safetensors")
