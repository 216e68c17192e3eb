"""An attack on DICOM files writes its adversarial images back as DICOM (the source's metadata,
a new SOP Instance UID, marked DERIVED): read back through the same window they give the model
the prediction the attack reported, and the budget is reported in Hounsfield units. Results
describe the files: an adversarial image that only just crossed the boundary can fall back when
its pixels are rounded to the stored values, so success is judged after that rounding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medfool.cli.main import main


@pytest.fixture(scope="module")
def ct_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """80 phantom CT slices as DICOM and a small CNN trained on them with ``medfool train``."""
    pytest.importorskip("pydicom")
    from medfool.data.dicom import write_ct_phantoms

    tmp = tmp_path_factory.mktemp("ct")
    root = write_ct_phantoms(tmp / "ct", n=40, size=32)
    model = tmp / "m"
    assert main(["train", "-d", str(root), "--arch", "small_cnn", "--width", "8", "--epochs", "4",
                 "--out", str(model)]) == 0
    return root, model


@pytest.mark.slow
def test_adversarial_dicom_round_trip_keeps_the_prediction(ct_model: tuple[Path, Path], tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    from medfool.data.dicom import read_dicom
    from medfool.data.windowing import Window
    from medfool.models import load_classifier

    root, model = ct_model
    out = tmp_path / "attack"
    assert main(["attack", "pgd", "-m", str(model / "model.safetensors"), "-d", str(root), "--window", "40,400",
                 "--eps", "8/255", "--steps", "10", "-o", "early_stop=false", "--n", "16", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["native"]["unit"] == "HU"
    assert results["native"]["eps_native"] == [pytest.approx(8 / 255 * 400)]
    written = results["dicom"]
    assert len(written) == 16
    arrays = np.load(out / "adversarial.npz")
    clf, _ = load_classifier(model / "model.safetensors")
    window = Window(40, 400)
    back = np.stack([read_dicom(out / w).pixels(window) for w in written]).transpose(0, 3, 1, 2)
    # the stored grid is 1 HU = 1/400 of the window: the round trip moves a pixel by at most half a step
    assert np.abs(back - arrays["adversarial_0"]).max() <= 0.5 / 400 + 1e-6
    with torch.no_grad():
        pred = clf.predict(torch.from_numpy(back))
    assert torch.equal(pred, torch.from_numpy(arrays["adv_pred_0"]))
    assert int(arrays["success_0"].sum()) >= 4  # images did flip: the check compares real attacks
    first = pydicom.dcmread(str(out / written[0]))
    assert first.ImageType[0] == "DERIVED" and "MODIFIED by medfool" in first.ImageComments
    assert "8/255 = 12.55 HU" in first.ImageComments


@pytest.mark.slow
def test_success_is_judged_on_what_the_file_can_store(ct_model: tuple[Path, Path], tmp_path: Path) -> None:
    """PGD that stops at the first misclassification leaves images a hair past the boundary; the
    results (success, predictions, the stored images) are those of the images snapped to the
    files' 1 HU grid, so the predictions recorded are the model's answers on what is stored."""
    root, model = ct_model
    out = tmp_path / "attack"
    assert main(["attack", "pgd", "-m", str(model / "model.safetensors"), "-d", str(root), "--window", "40,400",
                 "--eps", "4/255", "--steps", "10", "--n", "16", "--out", str(out)]) == 0
    arrays = np.load(out / "adversarial.npz")
    hu = arrays["adversarial_0"].astype(np.float64) * 400 - 160  # [0, 1] -> HU through the 40/400 window
    inside = (hu > -160 + 1e-3) & (hu < 240 - 1e-3)
    assert np.abs(hu - np.rint(hu))[inside].max() < 1e-3  # on the files' 1 HU grid
    clf_out = torch.from_numpy(arrays["adversarial_0"])
    from medfool.models import load_classifier

    clf, _ = load_classifier(model / "model.safetensors")
    with torch.no_grad():
        assert torch.equal(clf.predict(clf_out), torch.from_numpy(arrays["adv_pred_0"]))


def test_bad_clinical_inputs_fail_with_one_line(tmp_path: Path, tiny_model: Path, fails_cleanly) -> None:
    """A DICOM without pixel data, a compressed DICOM with no decoder, a NIfTI with NaNs, a
    HuggingFace folder without weights, a sidecar that does not fit the weights: one line that
    names the file and the problem, exit code 2."""
    pytest.importorskip("pydicom")
    import shutil

    import nibabel as nib
    from pydicom.data import get_testdata_file

    from medfool.data.dicom import write_ct_slice

    def folder(name: str, bad: Path) -> Path:
        root = tmp_path / name
        for cls in ("a", "b"):
            for k in range(3):
                write_ct_slice(root / cls / f"{k}.dcm", np.zeros((8, 8)))
        shutil.copy(bad, root / "b" / bad.name)
        return root

    nopix = folder("nopix", Path(get_testdata_file("rtplan.dcm")))
    fails_cleanly(["evaluate", "-m", str(tiny_model), "-d", str(nopix)], r"rtplan\.dcm: .*no pixel data")
    jpegls = folder("jpegls", Path(get_testdata_file("JPEGLSNearLossless_08.dcm")))
    fails_cleanly(["evaluate", "-m", str(tiny_model), "-d", str(jpegls)],
                  r"JPEGLSNearLossless_08\.dcm: compressed transfer syntax .* no decoder")
    vol = np.zeros((8, 8, 3), np.float32)
    vol[1, 1, 1] = np.nan
    (tmp_path / "nii" / "a").mkdir(parents=True)
    (tmp_path / "nii" / "b").mkdir(parents=True)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "nii" / "a" / "v.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros_like(vol), np.eye(4)), str(tmp_path / "nii" / "b" / "w.nii.gz"))
    fails_cleanly(["evaluate", "-m", str(tiny_model), "-d", str(tmp_path / "nii")], r"v\.nii\.gz: 1 voxel value")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "vit", "num_labels": 2}))
    fails_cleanly(["info", str(hf)], r"hf: no weights \(model\.safetensors\)")
    sd = tmp_path / "m.pt"
    from medfool.models import build

    torch.save(build("small_cnn", in_channels=1, num_outputs=2, width=4).state_dict(), sd)
    (tmp_path / "m.json").write_text(json.dumps({"task": "binary", "class_names": ["a", "b"],
                                                 "input_shape": [1, 8, 8], "mean": [0.5], "std": [0.25],
                                                 "num_outputs": 2, "arch": "small_cnn"}))
    fails_cleanly(["info", str(sd)], r"m\.pt: weights do not fit the metadata")
