"""The audit on what a vendor brings: a HuggingFace ViT at 224 px and a MONAI DenseNet-121 on a
folder of DICOM files (written by the tests, plus one of pydicom's own CT files), the report
read in headless Chromium with every budget also in Hounsfield units. The DenseNet runs at the
files' own 96 px here (a 224 px DenseNet audit takes minutes: benchmarks/clinical_audit.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from medfool.cli.main import main

# the small budgets for clinical resolution, shared with benchmarks/clinical_audit.py (which
# times them on a 224 px DenseNet-121): a 224 px DenseNet-121 costs ~100x a 28 px CNN per image
CLINICAL = Path(__file__).parents[2] / "benchmarks" / "clinical_audit.toml"


def _densenet(path: Path, size: int) -> Path:
    from medfool.models import build, save_checkpoint
    from medfool.models.classifier import Classifier, ModelMeta

    torch.manual_seed(0)
    net = build("densenet121", in_channels=1, num_outputs=2)
    meta = ModelMeta(task="binary", class_names=("lesion", "normal"), input_shape=(1, size, size), mean=(0.3,),
                     std=(0.3,), num_outputs=2, critical_classes=(0,), arch="densenet121")
    return save_checkpoint(Classifier(net, meta), path)


@pytest.fixture
def dicom_224(make_dicom_folder) -> Path:
    from pydicom.data import get_testdata_file

    root = make_dicom_folder("ct224", n=40, size=96)  # 80 files: 16 in the test split
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "normal" / "pydicom_CT_small.dcm")
    return root


def _read_report(page_url: str) -> tuple[list[str], list[str], str]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    from browser import CHROMIUM_FLAGS, chromium

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(page_url, wait_until="load")
            headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
            text = page.inner_text("body").replace("\xa0", " ")  # budgets keep their units on one line
        finally:
            browser.close()
    return problems, headings, text


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "size"), [("densenet121", 96), ("hf-vit", 224)])
def test_audit_on_dicom(kind: str, size: int, dicom_224: Path, tmp_path: Path) -> None:
    pytest.importorskip("monai")
    if kind == "densenet121":
        model = _densenet(tmp_path / "dn121.safetensors", size)
    else:
        from hf_folders import make_hf_vit

        model = make_hf_vit(tmp_path / "vit", size=224, labels=("lesion", "normal"))
    out = tmp_path / "out"
    assert main(["audit", "-m", str(model), "-d", str(dicom_224), "--size", str(size), "--window", "40,400",
                 "--config", str(CLINICAL), "--n", "16", "--out", str(out)]) == 0
    problems, headings, text = _read_report((out / "report.html").resolve().as_uri())
    assert problems == []
    for h in ("Findings", "Threat model", "Clean performance", "Attacks", "Examples"):
        assert h in headings
    assert f"1x{size}x{size} (C x H x W)" in text
    # every budget also in Hounsfield units: 4/255 of a 400 HU window is 6.27 HU
    assert "[0, 1] is the window 40/400 HU" in text and "4/255 (6.27 HU)" in text
