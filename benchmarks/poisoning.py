"""Training-set tampering: the backdoor must-shows, the poison-rate sweep and availability poisoning.

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/poisoning.py [--out runs/poisoning]
        [--only backdoor|availability] [--json OUT]

Runs (through the CLI, so the README's commands are what is measured; models are kept under
--out, so a second run reuses them and only prints):
  1. 5 % BadNets (3x3 checker, bottom-right) on PneumoniaMNIST (target: normal) and on the
     PathMNIST tiles (target: adipose, and the default benign target normal colon mucosa), with
     every detector, retraining without each detector's flags, and the 0.5-10 % sweep;
  2. availability poisoning on the PathMNIST tiles: error-maximising noise (8/255) and label
     flipping at 10 / 25 / 50 / 100 %.
Prints clean-accuracy drop and ASR against the clean model trained with the same seed, each
detector's TPR / FPR and AUROC, ASR and clean accuracy after retraining, and the sweep, and
writes the rows of these tables to OUT, by default benchmarks/results/poisoning[_ONLY].json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medfool.cli.main import main as medfool
from record import write_results  # benchmarks/record.py (the script folder is on sys.path)

RUNS = [("pneumoniamnist", "normal", "pneu"), ("pathmnist", "adipose", "path-adipose"),
        ("pathmnist", "auto", "path-auto")]


def backdoor(root: Path) -> dict[str, list[dict[str, object]]]:
    print("| dataset | target | poisons | clean acc. | poisoned acc. | drop (pts) | ASR clean | ASR poisoned |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    results = {}
    runs: list[dict[str, object]] = []
    detectors: list[dict[str, object]] = []
    sweep: list[dict[str, object]] = []
    for dataset, target, name in RUNS:
        out = root / name
        code = medfool(["-q", "poison", "backdoor", "-d", dataset, "--target", target, "--seed", "0", "--sweep",
                        "--out", str(out)])
        if code:
            sys.exit(code)
        d = json.loads((out / "results.json").read_text())
        results[name] = d
        c, p = d["clean_model"], d["poisoned_model"]
        print(f"| {dataset} | {d['target_name']} | {d['poison']['n_poisoned']} of {d['poison']['n_train']} | "
              f"{c['test']['accuracy']:.3f} | {p['test']['accuracy']:.3f} | {100 * p['accuracy_drop']:.1f} | "
              f"{c['backdoor']['asr']:.3f} | {p['backdoor']['asr']:.3f} |")
        runs.append({"run": name, "dataset": dataset, "target": d["target_name"],
                     "n_poisoned": d["poison"]["n_poisoned"], "n_train": d["poison"]["n_train"],
                     "clean_accuracy": c["test"]["accuracy"], "poisoned_accuracy": p["test"]["accuracy"],
                     "accuracy_drop_pts": 100 * p["accuracy_drop"], "asr_clean_model": c["backdoor"]["asr"],
                     "asr_poisoned_model": p["backdoor"]["asr"]})
    print("\n| run | detector | TPR | FPR | AUROC | ASR after retraining | clean acc. after |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, d in results.items():
        for det, r in d["detection"].items():
            if "tpr" not in r or "auroc" not in r:
                continue
            again = d.get("retrained", {}).get(det)
            tail = (f"{again['backdoor']['asr']:.3f} | {again['test']['accuracy']:.3f}" if again else "- | -")
            print(f"| {name} | {det} | {r['tpr']:.3f} | {r['fpr']:.3f} | {r['auroc']:.3f} | {tail} |")
            detectors.append({"run": name, "detector": det, "tpr": r["tpr"], "fpr": r["fpr"], "auroc": r["auroc"],
                              "asr_after_retraining": again["backdoor"]["asr"] if again else None,
                              "clean_accuracy_after_retraining": again["test"]["accuracy"] if again else None})
        s = d["detection"].get("strip-inference")
        if s:
            print(f"| {name} | STRIP at inference (test inputs) | {s['tpr']:.3f} | {s['fpr']:.3f} | - | - | - |")
            detectors.append({"run": name, "detector": "strip-inference", "tpr": s["tpr"], "fpr": s["fpr"]})
        nc = d["detection"].get("neural-cleanse")
        if nc:
            again = d.get("retrained", {}).get("neural-cleanse")
            tail = (f"{again['backdoor']['asr']:.3f} | {again['test']['accuracy']:.3f}" if again else "- | -")
            print(f"| {name} | Neural Cleanse: smallest class {nc['smallest']} (target {nc['true_target']}), "
                  f"infected {nc['infected'] or 'none'} | - | - | - | {tail} |")
            detectors.append({"run": name, "detector": "neural-cleanse", "smallest_class": nc["smallest"],
                              "true_target": nc["true_target"], "infected": nc["infected"],
                              "asr_after_retraining": again["backdoor"]["asr"] if again else None,
                              "clean_accuracy_after_retraining": again["test"]["accuracy"] if again else None})
    print("\n| run | rate | poisons | clean acc. | ASR |")
    print("|---|---:|---:|---:|---:|")
    for name, d in results.items():
        for r in d.get("sweep", []):
            print(f"| {name} | {r['rate']:.1%} | {r['n_poisoned']} | {r['accuracy']:.3f} | {r['asr']:.3f} |")
            sweep.append({"run": name, "rate": r["rate"], "n_poisoned": r["n_poisoned"],
                          "clean_accuracy": r["accuracy"], "asr": r["asr"]})
    return {"runs": runs, "detectors": detectors, "sweep": sweep}


def availability(root: Path) -> list[dict[str, object]]:
    print("\n| method | rate | poisons | clean acc. | drop (pts) |")
    print("|---|---:|---:|---:|---:|")
    rows: list[dict[str, object]] = []
    for method in ("error-max", "label-flip"):
        out = root / f"availability-{method}"
        code = medfool(["-q", "poison", "availability", "-d", "pathmnist", "--method", method, "--seed", "0",
                        "--out", str(out)])
        if code:
            sys.exit(code)
        for r in json.loads((out / "results.json").read_text())["curve"]:
            print(f"| {method} | {r['rate']:.0%} | {r['n_poisoned']} | {r['accuracy']:.3f} | "
                  f"{100 * r['accuracy_drop']:.1f} |")
            rows.append({"method": method, "rate": r["rate"], "n_poisoned": r["n_poisoned"],
                         "clean_accuracy": r["accuracy"], "accuracy_drop_pts": 100 * r["accuracy_drop"]})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/poisoning")
    parser.add_argument("--only", choices=("backdoor", "availability"), default=None)
    parser.add_argument("--json", default=None, help="results file (default: benchmarks/results/poisoning[_ONLY].json)")
    args = parser.parse_args()
    root = Path(args.out)
    found: dict[str, object] = {"out": args.out}
    if args.only in (None, "backdoor"):
        found["backdoor"] = backdoor(root)
    if args.only in (None, "availability"):
        found["availability"] = availability(root)
    write_results("poisoning" + (f"_{args.only}" if args.only else ""), found, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
