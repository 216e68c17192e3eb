"""Run medfool's audit from Python: train a model, audit it, read the findings and the numbers.

    python examples/audit_from_python.py [--out DIR]

The same job ``medfool audit`` runs, built as an ``AuditJob``. It is kept small here (24
synthetic images, short budgets) so that it finishes in about a minute on a laptop; drop the
``config`` argument to audit at the defaults, and give a real dataset and model (``-d`` and
``-m`` of the command line) in their place.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from medfool.data import load_dataset
from medfool.models import save_checkpoint
from medfool.models.train import TrainConfig, fit
from medfool.runs.audit.job import AuditJob, audit
from medfool.runs.common import DataSource

SMALL = """\
n = 24
[whitebox]
ensemble = "fast"
eps = [1, 4, 16]
steps = 5
[blackbox]
attacks = ["square"]
queries = 50
[patch]
steps = 20
n_craft = 32
[onepixel]
pixels = [1]
n = 8
population = 20
generations = 3
[maps]
n = 2
samples = 0
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="the audit's folder (default: a temporary folder)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)

    # a model as `medfool train -d synthetic --width 8 --epochs 3 --batch-size 64 --lr 0.01` would write it
    ds = load_dataset("synthetic")
    result = fit(ds, TrainConfig(arch_kwargs={"width": 8}, epochs=3, batch_size=64, lr=1e-2, seed=0))
    model_path = save_checkpoint(result.model, out / "model.safetensors", result.record)

    config = out / "small.toml"
    config.write_text(SMALL)
    job = AuditJob(model=str(model_path), data=DataSource("synthetic"), out=out / "audit", config=str(config), seed=0)
    report = audit(job, say=print)  # resumable: run it again and it picks up where it stopped
    assert report is not None

    results = json.loads((report.parent / "results.json").read_text())
    print(f"\n{report.parent / 'results.json'} holds every number of the report; for example")
    print(f"clean accuracy {results['clean']['accuracy']:.1%} on {results['clean']['n']} test images")
    for row in results["summaries"]:
        if row["stage"] == "whitebox" and row["attack"] == "ensemble":
            b = row["robust_breakdown"]
            lo, hi = b["ci95"]
            print(f"the ensemble at {row['budget']}: robust accuracy {b['accuracy']:.1%} (95 % CI {lo:.0%}-{hi:.0%}) "
                  f"on {b['n']} images")

if __name__ == "__main__":
    main()
