"""``medfool audit``: run the threat catalogue on a model and write a report; ``medfool report``
re-renders it from the results store.

The audit measures a seeded sample of --n (default 128) test images under graded natural
corruptions (scanner and acquisition variation, no attacker), then attacks them: the
headline is the worst case per image over an ensemble of white-box and query attacks
(AutoAttack's members; [whitebox] ensemble = "fast", "standard", AutoAttack's own budgets, or "off") at several budgets,
beside the naive FGSM and PGD-10; then a minimal-perturbation attack, a score-based black-box
search, a universal patch crafted on training images, few-pixel differential evolution and
single-pixel vulnerability maps, each at a documented default budget (see 'medfool audit
--print-config'). The ensemble is the slow part: Square's queries on every image no
gradient attack broke (500 in the default "fast" preset, 5,000 in "standard", AutoAttack's
own budgets). With --defence (or a [defence] section), each defence is measured against the naive
attacker, a gradient-free masking check and the adaptive attacker (BPDA, EOT), side by side; a
defended model (input transforms, an ensemble) is always measured that way. Every result
row goes into OUT/audit.sqlite as it is produced: run the same command again after an
interruption and it continues where it stopped. OUT/report.html is one self-contained page;
OUT/results.json holds the same numbers. Before the first unit the audit prints what each stage
can cost at most (model passes and time, the model timed on this machine); --estimate prints
only that, so a large model or image size can be budgeted first (at 224 px on a CPU the
defaults take hours: see --print-config and --config).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medfool.cli.common import (
    MODEL_HELP,
    add_data_options,
    command_record,
    data_source,
    model_path,
    positive,
    say,
    seed_value,
)
from medfool.errors import ConfigError
from medfool.runs.audit.config import AuditConfig
from medfool.runs.audit.job import AuditJob, audit, rerender
from medfool.vocab import DEVICE_CHOICES

__all__ = ["cmd_audit", "cmd_report", "register"]


def cmd_audit(args: argparse.Namespace) -> int:
    if args.print_config:
        print(AuditConfig().to_toml(), end="")
        return 0
    if not args.model or not args.dataset:
        raise ConfigError("audit needs --model and --dataset (or --print-config)")
    audit(AuditJob(model=args.model, data=data_source(args), out=Path(args.out), config=args.config, seed=args.seed,
                   n=args.n, device=args.device, fresh=args.fresh, defences=tuple(args.defence),
                   command=command_record(args), estimate=args.estimate, workers=args.workers,
                   ray_address=args.ray_address, worker_threads=args.threads_per_worker), say)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    rerender(Path(args.folder), say)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("audit", help="run the threat catalogue on a model and write an HTML report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "-m", type=model_path, help=MODEL_HELP)
    add_data_options(p, dataset_required=False)
    p.add_argument("--config", "-c", default=None, help="TOML file overriding the default budgets")
    p.add_argument("--print-config", action="store_true",
                   help="print the default configuration as TOML (a starting point for --config) and exit")
    p.add_argument("--n", type=positive, default=None, help="test images to audit (default 128, or the config's n)")
    p.add_argument("--seed", type=seed_value, default=None, help="random seed (default 0, or the config's seed)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--out", default="medfool-audit", help="output folder (default medfool-audit)")
    p.add_argument("--fresh", action="store_true", help="discard results already in OUT and start over")
    p.add_argument("--estimate", action="store_true",
                   help="print each stage's units, worst-case model passes and time on this machine (the model "
                        "timed on the audited images), then exit without writing anything")
    p.add_argument("--defence", action="append", default=[], metavar="NAME",
                   help="also measure a defence against the naive and the adaptive attacker: an input transform "
                        "put in front of the model (jpeg, median:size=3, bit-depth:bits=4, blur, resize-pad, "
                        "stain-norm) or a defended checkpoint (repeat; adds to the config's [defence] names)")
    p.add_argument("--workers", type=positive, default=None, metavar="N",
                   help="run the audit's units on N Ray workers on this machine, each with its share of the cores "
                        "and one GPU where there are GPUs (needs the ray extra: pip install 'medfool[ray]'; "
                        "without it the audit runs in this process); the store and report are the same")
    p.add_argument("--threads-per-worker", type=positive, default=None, metavar="T",
                   help="torch threads of each Ray worker (default: this machine's cores / N; small models at "
                        "28-64 px gain more from workers than from threads)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join the Ray cluster at ADDR (e.g. ray://head:10001 or auto) instead of starting one; "
                        "every node must see the model file and the data at the same paths")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("report", help="re-render an audit's report from its results store (no recomputation)",
                       description="Read OUT/audit.sqlite and write OUT/report.html and OUT/results.json again.")
    p.add_argument("folder", help="an audit's output folder")
    p.set_defaults(func=cmd_report)
