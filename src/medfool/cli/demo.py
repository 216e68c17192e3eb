"""``medfool demo``: train (or reuse) a small model on real histology data, audit it, and
write the audit's report (OUT/report.html).

Dataset choice, in order: the full official PathMNIST (found locally or downloaded), else the
best real histology data found (LC25000 lung, then the PathMNIST subset), else the synthetic
set, announced loudly because it is not medical data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medfool.cli.common import add_run_options, command_record, positive, say, seed_value
from medfool.runs.demo import DemoJob, run_demo

__all__ = ["cmd_demo", "register"]


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(DemoJob(out=Path(args.out), data_dir=args.data_dir, allow_download=not args.no_download,
                     split_seed=args.split_seed, retrain=args.retrain, n=args.n, config=args.config, fresh=args.fresh,
                     seed=args.seed, device=args.device, command=command_record(args)), say)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="train (or reuse) a small model on real histology data, audit it, write a report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-download", action="store_true", help="never try to download PathMNIST")
    p.add_argument("--split-seed", type=seed_value, default=0)
    p.add_argument("--retrain", action="store_true", help="ignore the cached demo model")
    p.add_argument("--out", default="medfool-demo", help="output folder (default medfool-demo)")
    p.add_argument("--n", type=positive, default=None, help="test images to audit (default 128)")
    p.add_argument("--config", default=None, help="TOML audit config (see 'medfool audit --print-config')")
    p.add_argument("--fresh", action="store_true", help="discard an earlier demo audit in OUT and start over")
    add_run_options(p)
    p.set_defaults(func=cmd_demo)
