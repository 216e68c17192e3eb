"""A DICOM round trip: read CT slices through a window, attack them, write the adversarial
images back as DICOM, read the written files and check what they store.

    python examples/dicom_round_trip.py [--out DIR]      (needs the dicom extra: pydicom)

The slices are phantoms medfool writes itself (soft tissue at 40 HU; 'lesion' slices carry a
+60 HU disc); point ``DataSource`` at your own class-per-folder tree of ``.dcm`` files instead.
The model sees [0, 1] pixels through the 40/400 HU window, so a budget of 8/255 is 12.5 HU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from medfool.data.dicom import read_dicom, write_ct_phantoms
from medfool.data.windowing import NativeOptions, Window
from medfool.models import load_classifier, save_checkpoint
from medfool.models.train import TrainConfig, fit
from medfool.runs.attack import AttackJob, run_attack
from medfool.runs.common import DataSource


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary folder)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)

    window = Window(40, 400)  # centre, width in HU: -160 HU reads as 0, 240 HU as 1
    source = DataSource(str(write_ct_phantoms(out / "ct", n=40, size=32)), native=NativeOptions(window=window))
    ds = source.load()  # no val/test folders: a stratified, seeded split is made and noted
    result = fit(ds, TrainConfig(arch_kwargs={"width": 8}, epochs=4, seed=0))
    model_path = save_checkpoint(result.model, out / "model.safetensors", result.record)

    job = AttackJob(name="pgd", model=str(model_path), data=source, out=out / "attack", eps=(8 / 255,),
                    options={"steps": 10, "early_stop": False}, n=16)
    run_attack(job, say=print)

    results = json.loads((job.out / "results.json").read_text())
    print(f"budget: {results['native']}")
    arrays = np.load(job.out / "adversarial.npz")
    files = [job.out / w for w in results["dicom"]]
    back = np.stack([read_dicom(f).pixels(window) for f in files]).transpose(0, 3, 1, 2)
    step = np.abs(back - arrays["adversarial_0"]).max()
    print(f"{len(files)} DICOM files written under {job.out / 'dicom'}; read back through the window they differ "
          f"from the attacked images by at most {step * 400:.2f} HU (the files store whole HU)")
    model, _ = load_classifier(model_path)
    with torch.no_grad():
        pred = model.predict(torch.from_numpy(back))
    same = bool(torch.equal(pred, torch.from_numpy(arrays["adv_pred_0"])))
    print(f"the model's answers on the files are the ones the attack reported: {same}; "
          f"{int(arrays['success_0'].sum())} of {len(files)} images fooled as stored")
    assert same


if __name__ == "__main__":
    main()
