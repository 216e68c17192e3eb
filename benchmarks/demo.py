"""Time ``medfool demo`` as a new user meets it: an empty model cache, the README's command.

Prints the wall time, its ratio to the 10-minute budget, the time of each audit stage (from
the results store) and whether every report section was filled, and writes them to OUT
(by default benchmarks/results/demo.json).

    python benchmarks/demo.py [--out DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from record import write_results  # benchmarks/record.py (the script folder is on sys.path)

BUDGET_S = 600.0
SECTIONS = ("findings", "threats", "clean", "attacks", "corruptions", "flips", "examples", "patch", "maps", "sanity")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="demo output folder (default: a temporary one)")
    parser.add_argument("--json", default=None, help="results file (default: benchmarks/results/demo.json)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "demo")
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache"), "MEDFOOL_PROGRESS": "0"}
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "medfool.cli.main", "demo", "--out", str(out)], env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        print(proc.stdout)
        if proc.returncode:
            print(proc.stderr)
            raise SystemExit(f"demo failed with exit code {proc.returncode}")
        stages: dict[str, float] = defaultdict(float)
        con = sqlite3.connect(out / "audit.sqlite")
        for name, wall_s in con.execute("SELECT name, wall_s FROM units"):
            stages[name.split("/")[0]] += wall_s
        con.close()
        page = (out / "report.html").read_text()
        missing = [s for s in SECTIONS if f"id='{s}'" not in page]
        print(f"demo wall time {wall:.0f} s = {wall / BUDGET_S:.2f} x the 10-minute budget "
              f"({os.cpu_count()} CPUs, torch threads default)")
        print("audit stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
              + f"; audit total {sum(stages.values()):.0f} s")
        print("report sections: " + ("all filled" if not missing else f"MISSING {', '.join(missing)}"))
    write_results("demo", {"wall_s": wall, "budget_s": BUDGET_S, "wall_over_budget": wall / BUDGET_S,
                           "cpus": os.cpu_count(), "stages_s": dict(stages), "audit_total_s": sum(stages.values()),
                           "sections_missing": missing}, args.json)


if __name__ == "__main__":
    main()
