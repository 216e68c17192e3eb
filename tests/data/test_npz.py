"""The .npz reader: good files load to [0, 1] NCHW; every kind of bad file gets a clear DataError."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medfool.data import load_dataset
from medfool.data.npz import load_npz
from medfool.errors import DataError


def test_loads_float_nchw_in_unit_range(make_npz):
    ds = load_dataset(str(make_npz()))
    x, y = ds.split("train").tensors()
    assert x.dtype == torch.float32 and x.shape == (40, 3, 8, 8)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert y.dtype == torch.int64 and y.shape == (40,)
    assert ds.info.class_names == ("class_0", "class_1", "class_2")


def test_grayscale_gets_one_channel(make_npz):
    x, _ = load_dataset(str(make_npz(channels=1))).split("test").tensors()
    assert x.shape == (40, 1, 8, 8)


def test_pixel_values_are_exact(make_npz, tmp_path):
    img = np.zeros((4, 2, 2, 3), np.uint8)
    img[0, 0, 0] = [0, 128, 255]
    path = make_npz(n=4, train_images=img, splits=("train", "val", "test"))
    x, _ = load_dataset(str(path)).split("train").get([0])
    assert x[0, :, 0, 0].tolist() == pytest.approx([0.0, 128 / 255, 1.0])


def test_missing_splits_are_carved_and_announced(make_npz):
    ds = load_dataset(str(make_npz(n=100, splits=("train",))))
    sizes = {k: len(v) for k, v in ds.splits.items()}
    assert sizes == {"train": 70, "val": 10, "test": 20}
    assert any("stratified" in note for note in ds.info.notes)
    # stratified: every class appears in the test part in the same proportion
    assert torch.bincount(ds.split("test").labels).tolist() in ([7, 7, 6], [7, 6, 7], [6, 7, 7])


def test_sidecar_gives_names_task_and_critical_classes(make_npz):
    path = make_npz(classes=2)
    path.with_suffix(".json").write_text(json.dumps(
        {"name": "toy", "task": "binary-class", "label": {"0": "benign", "1": "cancer"}, "critical_labels": [1]}))
    ds = load_dataset(str(path))
    assert ds.info.task == "binary" and ds.info.class_names == ("benign", "cancer")
    assert ds.info.critical_classes == (1,)
    assert ds.info.class_index("Cancer") == 1
    with pytest.raises(DataError, match=r"unknown class 'cancr'.*did you mean 'cancer'"):
        ds.info.class_index("cancr")
    assert ds.info.class_index("canc") == 1  # an unambiguous part of a name
    with pytest.raises(DataError, match=r"class 'n' is ambiguous for toy: it matches benign, cancer"):
        ds.info.class_index("n")


def test_truncated_file(make_npz):
    path = make_npz()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"toy\.npz: not a readable \.npz file"):
        load_dataset(str(path))


def test_corrupt_file(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip archive at all" * 10)
    with pytest.raises(DataError, match=r"junk\.npz: not a readable"):
        load_dataset(str(path))


def test_pickled_arrays_are_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, train_images=np.array([object()], dtype=object), train_labels=np.zeros(1))
    with pytest.raises(DataError, match="pickled objects"):
        load_dataset(str(path))


def test_missing_keys(make_npz):
    with pytest.raises(DataError, match="missing key 'val_labels'"):
        load_dataset(str(make_npz(val_labels=None)))
    with pytest.raises(DataError, match="expected 'train_images'"):
        load_dataset(str(make_npz(splits=(), foo=np.zeros(3))))


def test_wrong_image_shape(make_npz):
    with pytest.raises(DataError, match=r"toy\.npz\[train_images\]: images must have shape"):
        load_dataset(str(make_npz(train_images=np.zeros((40, 8), np.uint8))))


def test_label_count_mismatch(make_npz):
    with pytest.raises(DataError, match="39 labels for 40 images"):
        load_dataset(str(make_npz(train_labels=np.zeros((39, 1), np.uint8))))


def test_nan_pixels(make_npz):
    bad = np.full((40, 8, 8, 3), 0.5, np.float32)
    bad[3, 2, 2, 1] = np.nan
    with pytest.raises(DataError, match=r"toy\.npz\[train\]: 1 pixel value\(s\) are NaN"):
        load_dataset(str(make_npz(train_images=bad)))


def test_float_pixels_out_of_range(make_npz):
    with pytest.raises(DataError, match=r"float pixels must be in \[0, 1\]"):
        load_dataset(str(make_npz(train_images=np.full((40, 8, 8, 3), 3.0, np.float32))))


def test_labels_out_of_range(make_npz):
    path = make_npz(classes=2)
    path.with_suffix(".json").write_text(json.dumps({"task": "binary", "label": ["a", "b"]}))
    labels = np.zeros((40, 1), np.int64)
    labels[5] = 7
    np.savez(path, **{**dict(np.load(path)), "test_labels": labels})
    expected = r"\[test\]: labels must be in \[0, 1\] for 2 classes, found values in \[0, 7\]"
    with pytest.raises(DataError, match=expected):
        load_dataset(str(path))


def test_empty_split(make_npz):
    with pytest.raises(DataError, match=r"\[val\]: the split is empty"):
        load_dataset(str(make_npz(val_images=np.zeros((0, 8, 8, 3), np.uint8),
                                  val_labels=np.zeros((0, 1), np.uint8))))


def test_multilabel_shape_and_values(make_npz):
    labels = np.zeros((40, 4), np.uint8)
    labels[::3, 1] = 1
    path = make_npz(train_labels=labels, val_labels=labels, test_labels=labels)
    ds = load_npz(path)
    assert ds.info.task == "multi-label" and ds.split("train").labels.shape == (40, 4)
    bad = labels.copy()
    bad[0, 0] = 2
    path2 = make_npz("bad.npz", train_labels=bad, val_labels=labels, test_labels=labels)
    path2.with_suffix(".json").write_text(json.dumps({"task": "multi-label", "label": list("abcd")}))
    with pytest.raises(DataError, match="multi-label labels must be 0 or 1"):
        load_npz(path2)


def test_broken_sidecar_is_named(make_npz):
    path = make_npz()
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(DataError, match=r"toy\.json: not a readable JSON sidecar"):
        load_dataset(str(path))
