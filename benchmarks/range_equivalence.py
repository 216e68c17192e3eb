"""Square and HopSkipJump over HTTP against the same attacks in process: same model, images,
seed and budgets; the success, the queries each image spent, and the query log's count.

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/range_equivalence.py --model runs/lung-s0
        --dataset lc25000_lung [--images 20] [--seed 0] [--json OUT]
        (writes benchmarks/results/range_equivalence_DATASET.json unless --json names another file)

The server is ``medfool range serve`` as a separate process (no rate limit, no detector); the
attacks go through the client ``medfool attack -m http://...`` uses, one run id per attack, and
the log's rows for that run are counted afterwards.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import torch

from medfool.attacks import get_attack
from medfool.data import load_dataset
from medfool.models import load_classifier
from medfool.models.predict import from_classifier
from medfool.models.remote import connect
from range_load import KEY, serve
from record import slug, write_results

ATTACKS = {"square": ({"eps": 8 / 255, "queries": 1000}, "probs"), "hsj": ({"queries": 1000}, "labels")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    model, _ = load_classifier(args.model)
    test = load_dataset(args.dataset, size=model.meta.input_shape[1], allow_download=False).split("test")
    x, y = test.get(test.sample_index(args.images, seed=args.seed))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = serve(args.model, "none", Path(tmp))
        try:
            for name, (opts, output) in ATTACKS.items():
                attack = get_attack(name, **opts)
                t0 = time.perf_counter()
                local = attack(from_classifier(model, output), x, y, seed=args.seed)  # type: ignore[arg-type]
                t_local = time.perf_counter() - t0
                remote, client = connect(url, [KEY], output=output, run=name)  # type: ignore[arg-type]
                t0 = time.perf_counter()
                over = attack(remote, x, y, seed=args.seed)
                t_http = time.perf_counter() - t0
                client.close()
                with sqlite3.connect(Path(tmp) / "queries.sqlite") as db:
                    logged = int(db.execute("SELECT count(*) FROM queries WHERE run = ?", (name,)).fetchone()[0])
                ok = local.clean_correct
                rows[name] = {
                    "images": x.shape[0], "clean_correct": int(ok.sum()),
                    "success_in_process": int((local.success & ok).sum()),
                    "success_over_http": int((over.success & over.clean_correct).sum()),
                    "same_success_per_image": bool(torch.equal(local.success, over.success)),
                    "same_queries_per_image": bool(torch.equal(local.queries, over.queries)),
                    "max_abs_diff_adversarial": float((local.x_adv - over.x_adv).abs().max()),
                    "queries_counted_by_attack": int(over.queries.sum()), "queries_in_log": logged,
                    "client_requests": client.stats.requests, "seconds_in_process": t_local,
                    "seconds_over_http": t_http}
                print(name, rows[name], flush=True)
        finally:
            proc.kill()
            proc.wait()
    write_results(f"range_equivalence_{slug(args.dataset)}", {"model": args.model, "dataset": args.dataset,
                                                               "seed": args.seed, "attacks": rows}, args.json)


if __name__ == "__main__":
    main()
