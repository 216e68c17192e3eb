"""Image folders, CSV manifests and PatchCamelyon HDF5 files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

from medfool.data import load_dataset
from medfool.errors import DataError


def _write_folder(root, classes=("benign", "tumour"), per_class=10, size=8, mode="RGB"):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")
    return root


def test_image_folder_loads_and_splits(tmp_path):
    ds = load_dataset(str(_write_folder(tmp_path / "tiles")))
    assert ds.info.class_names == ("benign", "tumour") and ds.info.task == "binary"
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 14, "val": 2, "test": 4}
    x, _ = ds.split("train").tensors()
    assert x.shape == (14, 3, 8, 8)


def test_grayscale_folder(tmp_path):
    x, _ = load_dataset(str(_write_folder(tmp_path / "xr", mode="L"))).split("test").tensors()
    assert x.shape[1] == 1


def test_unreadable_image_is_named(tmp_path):
    root = _write_folder(tmp_path / "tiles")
    (root / "tumour" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"broken\.png: unreadable image"):
        load_dataset(str(root))


def test_mixed_sizes_need_a_size(tmp_path):
    root = _write_folder(tmp_path / "tiles")
    Image.new("RGB", (16, 16)).save(root / "benign" / "big.png")
    with pytest.raises(DataError, match=r"big\.png: size 16x16 differs"):
        load_dataset(str(root))
    assert load_dataset(str(root), size=8).split("train").image_shape == (3, 8, 8)


def test_csv_manifest(tmp_path):
    _write_folder(tmp_path / "tiles")
    lines = ["path,label,split"]
    for c in ("benign", "tumour"):
        for i in range(10):
            lines.append(f"tiles/{c}/{i}.png,{c},{'test' if i < 3 else 'val' if i < 4 else 'train'}")
    (tmp_path / "m.csv").write_text("\n".join(lines))
    ds = load_dataset(str(tmp_path / "m.csv"))
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 12, "val": 2, "test": 6}


def test_csv_manifest_errors(tmp_path):
    (tmp_path / "a.csv").write_text("file,class\nx.png,1\n")
    with pytest.raises(DataError, match=r"a\.csv: the manifest needs columns 'path' and 'label'"):
        load_dataset(str(tmp_path / "a.csv"))
    (tmp_path / "b.csv").write_text("path,label\nmissing.png,1\n")
    with pytest.raises(DataError, match=r"b\.csv:2: image file not found: missing\.png"):
        load_dataset(str(tmp_path / "b.csv"))


def _write_pcam(folder, n=12):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
            f["x"] = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
            f["y"] = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1)
    return folder


def test_pcam_folder_is_lazy_and_exact(tmp_path):
    folder = _write_pcam(tmp_path / "pcam")
    ds = load_dataset(str(folder))
    assert ds.info.name == "pcam" and set(ds.splits) == {"train", "val", "test"}
    x, y = ds.split("val").get([5, 1, 3])  # unsorted indices come back in the order asked
    with h5py.File(folder / "camelyonpatch_level_2_split_valid_x.h5") as f:
        expected = f["x"][[1, 3, 5]][[2, 0, 1]]
    assert np.allclose(x.permute(0, 2, 3, 1).numpy(), expected / 255.0)
    assert y.tolist() == [1, 1, 1]


def test_truncated_h5(tmp_path):
    folder = _write_pcam(tmp_path / "pcam")
    xf = folder / "camelyonpatch_level_2_split_train_x.h5"
    xf.write_bytes(xf.read_bytes()[:2000])
    with pytest.raises(DataError, match=r"split_train_x\.h5: not a readable HDF5 file"):
        load_dataset(str(folder))


def test_single_h5_missing_key(tmp_path):
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f["images"] = np.zeros((4, 96, 96, 3), np.uint8)
    with pytest.raises(DataError, match=r"one\.h5: missing dataset 'x'"):
        load_dataset(str(tmp_path / "one.h5"))


def _write_split_folder(root, splits, per_class=20):
    for split in splits:
        _write_folder(root / split, per_class=per_class)
    return root


def test_folder_with_train_and_test_but_no_val_gets_a_seeded_stratified_val_split(tmp_path):
    root = _write_split_folder(tmp_path / "tiles", ("train", "test"))
    ds = load_dataset(str(root), split_seed=3)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 35, "val": 5, "test": 40}
    assert sorted(np.bincount(ds.split("val").labels.numpy())) == [2, 3]  # stratified: both classes
    assert any("no val split" in n and "seed 3" in n for n in ds.info.notes), ds.info.notes
    x_train, _ = ds.split("train").tensors()
    x_val, _ = ds.split("val").tensors()
    assert not (x_val[:, None] == x_train[None]).flatten(2).all(2).any()  # carved out of train, not copied
    again = load_dataset(str(root), split_seed=3).split("val").tensors()[0]
    other = load_dataset(str(root), split_seed=4).split("val").tensors()[0]
    assert (again == x_val).all() and not (other == x_val).all()  # the split seed decides


def test_folder_with_train_and_test_but_no_val_is_said_when_loaded(tmp_path, caplog):
    import logging

    from medfool.runs.common import DataSource

    root = _write_split_folder(tmp_path / "tiles", ("train", "test"))
    with caplog.at_level(logging.WARNING):
        DataSource(str(root)).load()
    assert "no val split: medfool made a stratified split of its train images" in caplog.text
