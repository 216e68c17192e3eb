"""Hostile and careless input: every case is one line naming the file, exit code 2, no
traceback, nothing left behind; or a correct result where the input is in fact valid."""

from __future__ import annotations

import io
import json
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

from medfool.cli.main import main
from medfool.data import load_dataset
from medfool.runs.common import folder_lock


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _good_arrays(n: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {f"{s}_{k}": (rng.integers(0, 256, (n, 8, 8), dtype=np.uint8) if k == "images"
                         else (np.arange(n) % 2).reshape(n, 1))
            for s in ("train", "val", "test") for k in ("images", "labels")}


# -- data files -----------------------------------------------------------------------------------
def test_string_labels_in_a_later_split(tmp_path: Path, fails_cleanly) -> None:
    arrays = _good_arrays()
    arrays["test_labels"] = np.array([["a"]] * 12)
    f = _npz(tmp_path / "s.npz", **arrays)
    fails_cleanly(["train", "-d", str(f), "--out", str(tmp_path / "o")], r"s\.npz\[test_labels\]: labels must be "
                  "integers", tmp_path / "o")


def test_a_huge_label_is_not_a_huge_class_list(tmp_path: Path, fails_cleanly) -> None:
    """Without a sidecar the largest label sets the class count: 1e300 must not allocate 1e300 names."""
    arrays = _good_arrays()
    arrays["val_labels"] = np.full((12, 1), 1e300)
    f = _npz(tmp_path / "h.npz", **arrays)
    fails_cleanly(["train", "-d", str(f), "--out", str(tmp_path / "o")], r"h\.npz\[val_labels\]: labels must be whole "
                  r"numbers in \[0, 9999\]", tmp_path / "o")


def test_forged_array_header_is_refused_before_allocating(tmp_path: Path, fails_cleanly) -> None:
    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 28, 28), np.uint8))
    header["shape"] = (10**10, 28, 28)
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, header)
    npy.write(bytes(2 * 28 * 28))
    labels = io.BytesIO()
    np.save(labels, np.zeros((2, 1), np.uint8))
    f = tmp_path / "big.npz"
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("train_images.npy", npy.getvalue())
        z.writestr("train_labels.npy", labels.getvalue())
    fails_cleanly(["train", "-d", str(f), "--out", str(tmp_path / "o")], r"big\.npz: key 'train_images' claims "
                  r"shape \(10000000000, 28, 28\)", tmp_path / "o")


def test_pcam_labels_that_are_a_group(tmp_path: Path, fails_cleanly) -> None:
    h5py = pytest.importorskip("h5py")
    f = tmp_path / "p.h5"
    with h5py.File(f, "w") as h:
        h["x"] = np.zeros((4, 8, 8, 3), np.uint8)
        h.create_group("y")
    fails_cleanly(["train", "-d", str(f), "--out", str(tmp_path / "o")], r"p\.h5: 'y' must be an array",
                  tmp_path / "o")


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A valid 1x1 PNG whose IHDR (with a correct CRC) claims another size."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    path.write_bytes(bytes(data))


def _folder(root: Path, classes: dict[str, int], *, mode: str = "L", value: int = 128) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new(mode, (8, 8), value + i).save(root / name / f"{i}.png")
    return root


def test_decompression_bomb_header(tmp_path: Path, fails_cleanly) -> None:
    root = _folder(tmp_path / "imgs", {"a": 10, "b": 10})
    _png_claiming(root / "a" / "bomb.png", 30000, 30000)
    fails_cleanly(["train", "-d", str(root), "--out", str(tmp_path / "o")],
                  r"bomb\.png: header claims (30000 x 30000|more than)", tmp_path / "o")


def test_empty_class_folder_is_refused(tmp_path: Path, fails_cleanly) -> None:
    root = _folder(tmp_path / "imgs", {"a": 10, "b": 10})
    (root / "c").mkdir()
    fails_cleanly(["train", "-d", str(root), "--out", str(tmp_path / "o")], r"imgs/c: class folder holds no images",
                  tmp_path / "o")


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    root = tmp_path / "tif"
    for name, level in (("a", 1000), ("b", 40000)):
        (root / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((8, 8), level + i, np.uint16)).save(root / name / f"{i}.tif")
    split = load_dataset(str(root)).split("train")
    x, y = split.get(range(len(split)))
    means = {int(c): float(x[y == c].mean()) for c in y.unique()}
    assert 0.0 < min(means.values()) < 0.05 and 0.55 < max(means.values()) < 0.65  # 1000 / 65535, 40000 / 65535


def _manifest(tmp_path: Path, rows: list[str]) -> Path:
    root = _folder(tmp_path / "imgs", {"a": 10, "b": 10})
    lines = ["path,label"] + [f"imgs/{c}/{i}.png,{c}" for c in "ab" for i in range(10)] + rows
    f = tmp_path / "m.csv"
    f.write_text("\n".join(lines) + "\n")
    assert root.is_dir()
    return f


def test_manifest_row_without_a_label(tmp_path: Path, fails_cleanly) -> None:
    f = _manifest(tmp_path, ["imgs/a/0.png"])
    fails_cleanly(["train", "-d", str(f), "--out", str(tmp_path / "o")], r"m\.csv:22: the row needs a path and a "
                  "label", tmp_path / "o")


def test_manifest_paths_stay_in_their_folder(tmp_path: Path, fails_cleanly) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    Image.new("L", (8, 8), 3).save(outside)
    f = _manifest(tmp_path, [f"../{outside.name},a"])
    fails_cleanly(["train", "-d", str(f), "--out", str(tmp_path / "o")], r"m\.csv:22: path .* leaves the folder",
                  tmp_path / "o")
    assert len(load_dataset(str(f), allow_outside_paths=True).split("train")) > 0


# -- checkpoints ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model")
    assert main(["train", "-d", "synthetic", "--epochs", "1", "--width", "4", "--out", str(out)]) == 0
    return out / "model.safetensors"


def _edited(ckpt: Path, dst: Path, *, meta: dict | None = None, tensors: dict | None = None) -> Path:
    state = load_file(ckpt)
    with ckpt.open("rb") as h:
        n = int.from_bytes(h.read(8), "little")
        header = json.loads(h.read(n))["__metadata__"]
    info = json.loads(header["medfool"])
    info["model"].update(meta or {})
    state.update(tensors or {})
    save_file(state, dst, metadata={**header, "medfool": json.dumps(info)})
    return dst


@pytest.mark.parametrize(("meta", "pattern"), [
    ({"arch_kwargs": {"width": -1}}, "cannot build architecture 'small_cnn'"),
    ({"class_names": ["a", "b", "c", "d"], "num_outputs": 4}, "weights do not fit the metadata"),
    ({"critical_classes": [7]}, r"critical_classes must be class indices in \[0, 2\], got \[7\]"),
    ({"mean": [float("nan")] * 3}, "mean and std must be finite"),
])
def test_metadata_that_does_not_fit_the_weights(ckpt: Path, tmp_path: Path, fails_cleanly, meta: dict,
                                                pattern: str) -> None:
    bad = _edited(ckpt, tmp_path / "bad.safetensors", meta=meta)
    fails_cleanly(["evaluate", "-m", str(bad), "-d", "synthetic"], rf"bad\.safetensors: .*{pattern}")


def test_one_wrong_shaped_tensor(ckpt: Path, tmp_path: Path, fails_cleanly) -> None:
    name = next(k for k in load_file(ckpt) if k.endswith("weight") and k.startswith("network."))
    bad = _edited(ckpt, tmp_path / "bad.safetensors", tensors={name: torch.zeros(1, 1)})
    fails_cleanly(["evaluate", "-m", str(bad), "-d", "synthetic"], rf"bad\.safetensors: weights do not fit .*{name}")


def test_nan_weights_are_refused_everywhere(ckpt: Path, tmp_path: Path, fails_cleanly) -> None:
    state = load_file(ckpt)
    name = next(k for k in state if k.endswith("weight") and k.startswith("network."))
    bad = _edited(ckpt, tmp_path / "nan.safetensors", tensors={name: torch.full_like(state[name], float("nan"))})
    pattern = rf"nan\.safetensors: the model's {name} holds NaN"
    fails_cleanly(["evaluate", "-m", str(bad), "-d", "synthetic"], pattern)
    fails_cleanly(["attack", "pgd", "-m", str(bad), "-d", "synthetic", "--out", str(tmp_path / "a")], pattern,
                  tmp_path / "a")
    fails_cleanly(["audit", "-m", str(bad), "-d", "synthetic", "--out", str(tmp_path / "au")], pattern,
                  tmp_path / "au")


def test_a_refusal_inside_the_first_audit_unit_leaves_nothing(ckpt: Path, tmp_path: Path, fails_cleanly,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN outputs on a test image outside the audited sample surface in the clean unit, after the
    store exists: the folder the audit created is removed again."""
    from medfool.errors import CheckpointError
    from medfool.runs.audit import units

    def nan_split(*_a: object, **_k: object) -> None:
        raise CheckpointError("the model answers NaN or infinite values on 1 of 90 images of synthetic[test]")

    monkeypatch.setattr(units, "evaluate", nan_split)
    fails_cleanly(["audit", "-m", str(ckpt), "-d", "synthetic", "--n", "4", "--out", str(tmp_path / "o")],
                  "answers NaN", tmp_path / "o")


# -- numbers on the command line and in configs ---------------------------------------------------
@pytest.mark.parametrize(("argv", "pattern"), [
    (["train", "-d", "synthetic", "--seed", "99999999999999999999999"], r"--seed: must be in \[0, 4294967295\]"),
    (["train", "-d", "synthetic", "--split-seed", "-1"], r"--split-seed: must be in \[0, 4294967295\]"),
    (["train", "-d", "synthetic", "--width", "-4"], "--width: must be >= 1, got -4"),
    (["train", "-d", "synthetic", "--width", "0"], "--width: must be >= 1, got 0"),
    (["train", "-d", "synthetic", "--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
    (["attack", "pgd", "-m", "m", "-d", "synthetic", "--eps", "1e400"], "epsilon must be a number like 8/255"),
    (["attack", "pgd", "-m", "m", "-d", "synthetic", "--n", "-5"], "--n: must be >= 1, got -5"),
    (["attack", "pgd", "-m", "m", "-d", "synthetic", "--batch-size", "-1"], "--batch-size: must be >= 1"),
    (["attack", "uap", "-m", "m", "-d", "synthetic", "--n-craft", "0"], "--n-craft: must be >= 1, got 0"),
])
def test_numbers_out_of_range(argv: list[str], pattern: str, fails_cleanly) -> None:
    fails_cleanly(argv, pattern)


def test_config_seed_out_of_range(ckpt: Path, tmp_path: Path, fails_cleanly) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text("seed = 100000000000000000000000\n")
    fails_cleanly(["audit", "-m", str(ckpt), "-d", "synthetic", "--config", str(cfg), "--out", str(tmp_path / "o")],
                  r"seed must be in \[0, 4294967295\]", tmp_path / "o")


# -- one audit per folder, a damaged store --------------------------------------------------------
def test_a_second_run_into_a_locked_folder_is_refused(ckpt: Path, tmp_path: Path, fails_cleanly) -> None:
    out = tmp_path / "o"
    out.mkdir()
    with folder_lock(out):
        fails_cleanly(["audit", "-m", str(ckpt), "-d", "synthetic", "--n", "4", "--out", str(out)],
                      rf"{out}: another medfool run \(pid \d+\) is writing into this folder")
    assert not (out / "audit.sqlite").exists()


def test_report_on_a_damaged_store_changes_nothing(tmp_path: Path, fails_cleanly) -> None:
    (tmp_path / "audit.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
    (tmp_path / "results.json").write_text("{}")
    fails_cleanly(["report", str(tmp_path)], "audit.sqlite: not a readable results store")
    assert (tmp_path / "results.json").read_text() == "{}"
    assert not (tmp_path / "audit.sqlite-wal").exists()


# -- fuzz -----------------------------------------------------------------------------------------
_KEYS = st.sampled_from(["train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels",
                         "other"])
_ARRAYS = st.one_of(
    st.builds(lambda n, h, c: np.zeros((n, h, h, c) if c else (n, h, h), np.uint8),
              st.integers(0, 6), st.integers(1, 9), st.sampled_from([0, 1, 2, 3, 4])),
    st.builds(lambda n, k: np.arange(n * k).reshape(n, k) - 2, st.integers(0, 6), st.integers(1, 3)),
    st.builds(lambda v: np.array(v), st.lists(st.floats(allow_nan=True), max_size=6)),
    st.builds(lambda v: np.array(v), st.lists(st.text(max_size=3), min_size=1, max_size=6)),
)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays=st.dictionaries(_KEYS, _ARRAYS, max_size=6))
def test_fuzzed_npz_fails_cleanly_or_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           arrays: dict[str, np.ndarray]) -> None:
    here = Path(tempfile.mkdtemp(dir=tmp_path))  # one folder per example (tmp_path is shared by them)
    f = _npz(here / "fuzz.npz", **arrays)
    out = here / "out"
    code = main(["train", "-d", str(f), "--epochs", "1", "--width", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    if code == 0:
        return  # a valid file (rare): it trained
    assert code == 2, err
    assert err[-1].startswith("medfool: error: ") and "Traceback" not in "\n".join(err)
    assert not out.exists()


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=600), suffix=st.sampled_from([".npz", ".h5", ".csv", ".safetensors", ".pt"]))
def test_fuzzed_bytes_fail_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str], blob: bytes,
                                   suffix: str) -> None:
    here = Path(tempfile.mkdtemp(dir=tmp_path))
    f = here / f"junk{suffix}"
    f.write_bytes(blob)
    if suffix in (".safetensors", ".pt"):
        f.with_suffix(".json").write_text(json.dumps({"task": "multi-class", "class_names": ["a", "b", "c"],
                                                      "input_shape": [3, 28, 28], "mean": [0.5] * 3,
                                                      "std": [0.2] * 3, "num_outputs": 3, "arch": "small_cnn"}))
        argv = ["evaluate", "-m", str(f), "-d", "synthetic"]
    else:
        argv = ["train", "-d", str(f), "--epochs", "1", "--out", str(here / "out")]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err[-1].startswith("medfool: error: ") and "Traceback" not in "\n".join(err)
    assert not (here / "out").exists()
