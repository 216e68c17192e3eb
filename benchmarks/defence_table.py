"""Markdown tables from a ``medfool defend evaluate`` run's ``defence.json``.

Usage:  python benchmarks/defence_table.py OUT/defence.json [--json benchmarks/results/NAME.json]

Prints two tables: per defence and budget, robust accuracy under the naive attacker, the
masking check and the adaptive attacker (with its Wilson 95 % interval, the balanced figure
and how far it lies above the constant answer); then the adaptive attacker's per-class
figures (robust sensitivity and specificity for two classes). ``--json`` copies the figures
the tables show, with the run's settings, to a results file the benchmarks README cites.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def ci(b: dict[str, Any]) -> str:
    lo, hi = b["ci95"]
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def signed(v: float) -> str:
    return f"{100 * v:+.1f}"


def headline_rows(data: dict[str, Any]) -> list[str]:
    """One row per defence and budget; the undefended model first where it was measured."""
    out = ["| model | clean | budget | naive | masking check | adaptive [95 % CI] | balanced | above constant |",
           "|---|---:|---|---:|---:|---:|---:|---:|"]
    baseline_done: set[float] = set()
    for d in data["defences"]:
        for row in d["rows"]:
            base = row["breakdown"].get("baseline")
            if base is not None and row["eps"] not in baseline_done:
                baseline_done.add(row["eps"])
                out.append(f"| undefended (the ensemble) | {pct(d['baseline_clean_accuracy'])} | "
                           f"{row['eps_255']:g}/255 | | | {pct(base['accuracy'])} {ci(base)} | "
                           f"{pct(base.get('balanced', base['accuracy']))} | "
                           f"{signed(base['accuracy'] - base['constant']) if 'constant' in base else ''} |")
    for d in data["defences"]:
        for row in d["rows"]:
            a = row["breakdown"]["adaptive"]
            out.append(f"| {d['name']} ({d['kind']}) | {pct(d['clean_accuracy'])} | {row['eps_255']:g}/255 | "
                       f"{pct(row['naive'])} | {pct(row['masking_check'])} | **{pct(a['accuracy'])}** {ci(a)} | "
                       f"{pct(a.get('balanced', a['accuracy']))} | "
                       f"{signed(a['accuracy'] - a['constant']) if 'constant' in a else ''} |")
    return out


def class_rows(data: dict[str, Any]) -> list[str]:
    """The adaptive attacker's figures per class (and the undefended model's)."""
    first = data["defences"][0]["rows"][0]["breakdown"]["adaptive"]
    names = list(first["per_class"])
    binary = "sensitivity" in first
    head = "| model | budget | " + " | ".join(f"{n} (n)" for n in names)
    head += " | robust sensitivity | robust specificity |" if binary else " |"
    out = [head, "|---|---|" + "---:|" * (len(names) + (2 if binary else 0))]

    def line(label: str, eps: float, b: dict[str, Any]) -> str:
        cells = [f"{pct(b['per_class'][n]['accuracy'])} ({b['per_class'][n]['n']})" for n in names]
        text = f"| {label} | {eps:g}/255 | " + " | ".join(cells)
        if binary:
            text += f" | {pct(b['sensitivity'])} | {pct(b['specificity'])}"
        return text + " |"

    seen: set[float] = set()
    for d in data["defences"]:
        for row in d["rows"]:
            base = row["breakdown"].get("baseline")
            if base is not None and "per_class" in base and row["eps"] not in seen:
                seen.add(row["eps"])
                out.append(line("undefended", row["eps_255"], base))
    for d in data["defences"]:
        for row in d["rows"]:
            out.append(line(d["name"], row["eps_255"], row["breakdown"]["adaptive"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("defence_json", type=Path)
    parser.add_argument("--json", type=Path, default=None, help="copy the figures to this results file")
    args = parser.parse_args()
    data = json.loads(args.defence_json.read_text())
    s = data["settings"]
    print(f"{data['dataset']}: {s['n']} test images, preset {s['preset']}, EOT {s['eot']}, seed {s['seed']}\n")
    print("\n".join(headline_rows(data)))
    print()
    print("\n".join(class_rows(data)))
    times = {d["name"]: round(d["cost"].get("eval_s", 0.0)) for d in data["defences"]}
    print(f"\nwall time per defence (s): {times}")
    if args.json:
        keep = {k: data[k] for k in ("dataset", "settings", "environment") if k in data}
        keep["defences"] = [{k: d[k] for k in ("name", "kind", "random", "n", "clean_accuracy",
                                               "baseline_clean_accuracy", "rows", "cost", "checks", "finding")}
                            for d in data["defences"]]
        args.json.write_text(json.dumps(keep, indent=1))


if __name__ == "__main__":
    main()
