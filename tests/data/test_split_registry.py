"""Stratified splits (property tests), the dataset registry, downloads and synthetic data."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medfool.data import list_datasets, load_dataset, make_synthetic
from medfool.data.download import download
from medfool.data.split import stratified_split
from medfool.errors import DataError, DownloadError


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=10, max_size=300), st.integers(0, 2**31))
def test_split_is_a_partition_with_exact_sizes(labels, seed):
    labels = np.array(labels)
    parts = stratified_split(labels, {"train": 0.7, "val": 0.1, "test": 0.2}, seed)
    allidx = np.concatenate(list(parts.values()))
    assert sorted(allidx.tolist()) == list(range(len(labels)))
    n = len(labels)
    for name, frac in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        assert abs(len(parts[name]) - frac * n) < 1.0 + 1e-9
    # stratified: each class keeps its share of a part to within two samples (a random split of
    # a 100-image class would stray by about four)
    for c in np.unique(labels):
        total = (labels == c).sum()
        for name, frac in (("train", 0.7), ("test", 0.2)):
            assert abs((labels[parts[name]] == c).sum() - frac * total) <= 2.0 + 1e-9


def test_split_is_seeded():
    labels = np.arange(100) % 3
    a = stratified_split(labels, {"a": 0.5, "b": 0.5}, 1)
    assert all(np.array_equal(a[k], stratified_split(labels, {"a": 0.5, "b": 0.5}, 1)[k]) for k in a)
    assert not np.array_equal(a["a"], stratified_split(labels, {"a": 0.5, "b": 0.5}, 2)["a"])


def test_unknown_name_suggests(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'pneumonia'; did you mean 'pneumoniamnist'"):
        load_dataset("pneumonia", data_dir=tmp_path, allow_download=False)


def test_missing_file_without_download(tmp_path):
    with pytest.raises(DataError, match=r"dermamnist_64\.npz not found"):
        load_dataset("dermamnist_64", data_dir=tmp_path, allow_download=False)


def test_size_conflict():
    with pytest.raises(DataError, match="names size 64 but --size 28"):
        load_dataset("pathmnist_64", size=28, allow_download=False)


def test_medmnist_name_found_in_data_dir(make_npz, tmp_path):
    make_npz("breastmnist.npz", classes=2, channels=1)
    ds = load_dataset("breastmnist", data_dir=tmp_path, allow_download=False)
    assert ds.info.class_names == ("malignant", "normal, benign") and ds.info.critical_classes == (0,)
    assert any(r.name == "breastmnist" and r.path is not None for r in list_datasets(tmp_path))


def test_download_verifies_md5_and_is_atomic(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"medical" * 1000)
    good = hashlib.md5(src.read_bytes()).hexdigest()
    target = tmp_path / "out" / "file.npz"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(src.as_uri(), target, "0" * 32)
    assert not target.exists() and not any(target.parent.glob("*.part"))
    download(src.as_uri(), target, good)
    assert target.read_bytes() == src.read_bytes()


def test_download_failure_is_one_clear_error(tmp_path):
    with pytest.raises(DownloadError, match="could not download"):
        download((tmp_path / "nope.bin").as_uri(), tmp_path / "x.npz", "0" * 32)


def test_synthetic_is_deterministic_and_labelled():
    a, b = make_synthetic(seed=3), make_synthetic(seed=3)
    xa, ya = a.split("train").tensors()
    xb, yb = b.split("train").tensors()
    assert np.array_equal(xa.numpy(), xb.numpy()) and np.array_equal(ya.numpy(), yb.numpy())
    assert "not medical" in a.info.notes[0]


@pytest.mark.slow
@pytest.mark.realdata
def test_real_datasets(real_data, monkeypatch):
    monkeypatch.setenv("MEDFOOL_DATA_DIR", str(real_data))
    path = load_dataset("pathmnist")
    assert {k: len(v) for k, v in path.splits.items()} == {"train": 700, "val": 100, "test": 200}
    assert path.info.notes and "stratified" in path.info.notes[0]
    pneu = load_dataset("pneumoniamnist")
    assert [len(pneu.split(s)) for s in ("train", "val", "test")] == [4708, 524, 624]
    assert pneu.split("test").image_shape == (1, 28, 28)
    lung = load_dataset("lc25000_lung_64")
    assert lung.info.name == "lc25000_lung_64" and lung.split("val").image_shape == (3, 64, 64)
    assert lung.info.critical_classes == (0, 2)


def test_chestmnist_is_multilabel_with_catalogue_names(make_npz, tmp_path):
    labels = (np.random.default_rng(0).random((40, 14)) < 0.2).astype(np.uint8)
    make_npz("chestmnist.npz", channels=1, train_labels=labels, val_labels=labels, test_labels=labels)
    ds = load_dataset("chestmnist", data_dir=tmp_path, allow_download=False)
    assert ds.info.task == "multi-label" and ds.info.class_names[0] == "atelectasis"
    assert ds.split("train").labels.shape == (40, 14)
