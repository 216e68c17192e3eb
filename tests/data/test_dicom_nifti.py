"""DICOM and NIfTI into the [0, 1] attack space through one stated window, and back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medfool.data import load_dataset
from medfool.data.dicom import read_dicom, write_ct_slice, write_dicom
from medfool.data.nifti import read_nifti
from medfool.data.windowing import NativeImage, NativeOptions, Window, choose_window
from medfool.errors import DataError


def test_ct_goes_through_rescale_and_the_files_window(tmp_path: Path) -> None:
    hu = np.array([[-1000.0, -160.0], [40.0, 240.0]])
    im = read_dicom(write_ct_slice(tmp_path / "a.dcm", hu))
    assert im.unit == "HU" and im.file_window == Window(40, 400, "HU")
    np.testing.assert_allclose(im.native, hu)
    px = im.pixels(im.file_window)[..., 0]
    np.testing.assert_allclose(px, [[0.0, 0.0], [0.5, 1.0]])  # -160 HU is the window's lower edge
    assert im.file_window.native(8 / 255) == pytest.approx(12.549, abs=1e-3)


def test_monochrome1_displays_high_values_dark(tmp_path: Path) -> None:
    hu = np.array([[-160.0, 240.0]])
    im = read_dicom(write_ct_slice(tmp_path / "m1.dcm", hu, photometric="MONOCHROME1"))
    np.testing.assert_allclose(im.pixels(Window(40, 400))[..., 0], [[1.0, 0.0]])


def data_window(images: list[NativeImage], stated: Window | None) -> tuple[Window, str]:
    """The dataset window of images in memory (the loader reads the files' windows from their
    headers and the range only when it needs it)."""
    return choose_window(stated, [im.file_window for im in images], images[0].unit,
                         lambda: (min(float(im.native.min()) for im in images),
                                  max(float(im.native.max()) for im in images)))


def test_one_window_for_the_dataset_stated_then_files_then_range(tmp_path: Path) -> None:
    a = read_dicom(write_ct_slice(tmp_path / "a.dcm", np.full((2, 2), 0.0)))
    b = read_dicom(write_ct_slice(tmp_path / "b.dcm", np.full((2, 2), 100.0), window=(50, 350)))
    c = read_dicom(write_ct_slice(tmp_path / "c.dcm", np.array([[-100.0, 300.0]]), window=None))
    assert data_window([a, b], Window(0, 80))[0] == Window(0, 80, "HU")
    assert data_window([a, a], None)[0] == Window(40, 400, "HU")
    w, why = data_window([a, b, c], None)
    assert (w.low, w.high) == (-100, 300) and "different windows" in why


def test_folder_of_dicom_keeps_window_and_files(make_dicom_folder) -> None:
    root = make_dicom_folder(n=10, size=16)
    ds = load_dataset(str(root))
    assert ds.info.window == Window(40, 400, "HU")
    x, _ = ds.split("train").tensors()
    assert x.shape[1:] == (1, 16, 16) and float(x.min()) >= 0 and float(x.max()) <= 1
    files = ds.split("test").files
    assert files is not None and all(f.endswith(".dcm") for f in files)
    # the class is in the pixels: lesion images are brighter where the disc is
    stated = load_dataset(str(root), native=NativeOptions(Window(100, 200)))
    assert stated.info.window == Window(100, 200, "HU")
    assert not np.allclose(stated.split("train").tensors()[0].numpy(), x.numpy())


def test_write_back_round_trip_keeps_the_pixels_to_the_stored_grid(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = write_ct_slice(tmp_path / "src.dcm", 40 + 30 * rng.standard_normal((24, 24)))
    im = read_dicom(src)
    window = im.file_window
    assert window is not None
    adv = np.clip(im.pixels(window) + rng.uniform(-8 / 255, 8 / 255, (24, 24, 1)), 0, 1).astype(np.float32)
    out = write_dicom(src, adv, tmp_path / "adv.dcm", window=window, note="medfool test")
    back = read_dicom(out)
    # one stored level is 1 HU = 1/400 of the window: rounding moves a pixel by at most half of it
    assert np.abs(back.pixels(window) - adv).max() <= 0.5 / 400 + 1e-6
    import pydicom

    a, b = pydicom.dcmread(str(src)), pydicom.dcmread(str(out))
    assert b.SOPInstanceUID != a.SOPInstanceUID and b.StudyInstanceUID == a.StudyInstanceUID
    assert b.PatientID == a.PatientID and b.ImageType[0] == "DERIVED" and "medfool" in b.ImageComments


def test_monochrome1_write_back_keeps_the_inversion(tmp_path: Path) -> None:
    src = write_ct_slice(tmp_path / "m1.dcm", np.array([[-100.0, 0.0], [100.0, 200.0]]), photometric="MONOCHROME1")
    window = Window(40, 400, "HU")
    adv = np.array([[0.9, 0.5], [0.25, 0.1]], dtype=np.float32)  # bright = low HU in MONOCHROME1
    back = read_dicom(write_dicom(src, adv, tmp_path / "adv.dcm", window=window, note="medfool test"))
    assert back.inverted
    assert np.abs(back.pixels(window)[..., 0] - adv).max() <= 0.5 / 400 + 1e-6


def test_bad_dicom_files_name_the_file_and_the_problem(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    with pytest.raises(DataError, match="no pixel data"):
        read_dicom(Path(get_testdata_file("rtplan.dcm")))
    with pytest.raises(DataError, match=r"compressed transfer syntax .*no decoder"):
        read_dicom(Path(get_testdata_file("JPEGLSNearLossless_08.dcm")))
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 300)
    with pytest.raises(DataError, match=r"junk\.dcm: not a DICOM file"):
        read_dicom(junk)


def test_pydicoms_own_files_read(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    ct = read_dicom(Path(get_testdata_file("CT_small.dcm")))
    assert ct.unit == "HU" and ct.native.shape == (128, 128) and ct.file_window is None
    mr = read_dicom(Path(get_testdata_file("MR_small.dcm")))
    assert mr.file_window is not None and mr.unit == "grey levels"


def test_nifti_slices_and_nan_refused(tmp_path: Path) -> None:
    import nibabel as nib

    vol = np.random.default_rng(0).normal(0, 100, (8, 8, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "v.nii.gz"))
    slices = read_nifti(tmp_path / "v.nii.gz", axis=2)
    assert len(slices) == 5 and slices[0].native.shape == (8, 8)
    np.testing.assert_allclose(slices[3].native, vol[:, :, 3], rtol=1e-6)
    vol[2, 2, 2] = np.nan
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "nan.nii"))
    with pytest.raises(DataError, match=r"nan\.nii: 1 voxel value"):
        read_nifti(tmp_path / "nan.nii")


def test_nifti_folder_gives_one_image_per_slice(tmp_path: Path) -> None:
    import nibabel as nib

    rng = np.random.default_rng(1)
    for cls, shift in (("a", 0.0), ("b", 200.0)):
        for k in range(4):
            (tmp_path / "vols" / cls).mkdir(parents=True, exist_ok=True)
            vol = (rng.normal(0, 50, (8, 8, 6)) + shift).astype(np.float32)
            nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "vols" / cls / f"{k}.nii.gz"))
    ds = load_dataset(str(tmp_path / "vols"))
    assert sum(len(s) for s in ds.splits.values()) == 2 * 4 * 6
    assert ds.info.window is not None and ds.info.window.unit == "native units"
