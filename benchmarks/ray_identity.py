"""The same audit in this process and on 2 Ray workers: are the stores equal, row for row?

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/ray_identity.py
        --model runs/lung-s0/model.safetensors --model runs/pneu-s0/model.safetensors [--n 32] [--json OUT]
        (writes benchmarks/results/ray_identity.json unless --json names another file)

Each model is audited at the default budgets (``--n`` images, the models' own datasets) twice:
in this process, then with ``--workers 2``. The stores are compared with
``ResultStore.snapshot`` (every row, artifact and unit; times excluded).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from medfool.eval.store import ResultStore
from medfool.models import load_classifier
from medfool.runs.audit.job import AuditJob, audit
from medfool.runs.common import DataSource
from record import write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, model in enumerate(args.model):
            dataset = str(load_classifier(model)[0].meta.dataset)
            snapshots, times = [], {}
            for label, workers in (("in_process", None), ("workers_2", 2)):
                out = Path(tmp) / f"{k}-{label}"
                start = time.perf_counter()
                audit(AuditJob(model=model, data=DataSource(dataset, allow_download=False), out=out, n=args.n,
                               workers=workers), lambda _: None)
                times[f"{label}_s"] = time.perf_counter() - start
                with ResultStore.open(out / "audit.sqlite", readonly=True) as store:
                    snapshots.append(store.snapshot())
            a, b = snapshots
            row = {"model": model, "dataset": dataset, "n": args.n, "units": len(a["units"]), "rows": len(a["rows"]),
                   "artifacts": len(a["artifacts"]), "identical": a == b,
                   "rows_differing": sum(x != y for x, y in zip(a["rows"], b["rows"], strict=False))
                   + abs(len(a["rows"]) - len(b["rows"])),
                   "artifacts_differing": sorted(n for n in a["artifacts"].keys() | b["artifacts"].keys()
                                                 if a["artifacts"].get(n) != b["artifacts"].get(n)), **times}
            print(row, flush=True)
            rows.append(row)
    write_results("ray_identity", {"rows": rows}, args.json)


if __name__ == "__main__":
    main()
