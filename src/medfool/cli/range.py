"""``medfool range``: the model served over HTTP as a hospital serves it, for attacks over the
network (API keys, per-key rate limits and daily budgets, an append-only query log)."""

from __future__ import annotations

import argparse
from pathlib import Path

from medfool.cli.common import MODEL_HELP, float_in, int_in, model_path, say
from medfool.cli.defend import parse_transform
from medfool.vocab import DEVICE_CHOICES

__all__ = ["register"]


def cmd_serve(args: argparse.Namespace) -> int:
    from medfool.data.windowing import Window
    from medfool.serve.run import RangeJob, serve

    serve(RangeJob(args.model, keys=args.keys, api_key=args.api_key, out=Path(args.out), host=args.host,
                   port=args.port, answer=args.answer, rate=args.rate, burst=args.burst, daily=args.daily,
                   max_bytes=args.max_bytes, device=args.device, detector=args.detector, on_detect=args.on_detect,
                   encoder=args.encoder, fpr=args.fpr, calibrate_on=args.calibrate_on,
                   window=Window.parse(args.window) if args.window else None, seed=args.seed,
                   transforms=tuple(args.defence or ())))
    return 0


def cmd_add_key(args: argparse.Namespace) -> int:
    from medfool.serve.run import add_key

    key = add_key(args.keys, args.name)
    say(f"{args.name}: {key}")
    say(f"(shown once; {args.keys} holds only its salted digest)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from medfool.serve.report import as_json, format_report, range_report
    from medfool.utils.io import atomic_write_json

    reports = range_report(Path(args.log), [Path(r) for r in args.runs or []])
    say(format_report(reports))
    if args.json:
        atomic_write_json(Path(args.json), {"log": args.log, "runs": as_json(reports)})
        say(f"wrote {args.json}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("range", help="serve a model over HTTP with API keys, limits, a query log and detectors",
                       description="The model served over HTTP as a hospital serves it, for attacks over the "
                                   "network: API keys, per-key rate limits and daily budgets, an append-only query "
                                   "log, stateful attack detectors; and the report of what the defender saw. Attack "
                                   "it with 'medfool attack NAME -m http://HOST:PORT --api-key KEY'. See 'medfool "
                                   "range SUBCOMMAND --help'.")
    rsub = p.add_subparsers(dest="range_command", metavar="SUBCOMMAND")
    rsub.required = True
    _add_serve(rsub)
    _add_report(rsub)
    k = rsub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", metavar="ACTION")
    k.required = True
    a = k.add_parser("add", help="make a key; print it once, store its salted digest")
    a.add_argument("name")
    a.add_argument("--keys", required=True, help="key file (created if absent)")
    a.set_defaults(func=cmd_add_key)


def _add_serve(rsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = rsub.add_parser("serve", help="serve a model (MAX and KServe v2 dialects) on this machine",
                        description="Serve MODEL on HTTP: POST /model/predict (MAX style, multipart field 'image', "
                                    "PNG, NPY or DICOM) and POST /v2/models/medfool/infer (KServe v2, FP32 "
                                    "N x C x H x W in [0, 1]); OpenAPI schema at /openapi.json. Every prediction "
                                    "needs an API key; each key has a token-bucket rate limit and a daily budget (429 "
                                    "with Retry-After); every image answered is first written to OUT/queries.sqlite, "
                                    "with the verdict of the stateful detector (--detector) if one watches.")
    q.add_argument("--model", "-m", required=True, type=model_path, help=MODEL_HELP)
    q.add_argument("--keys", default=None, help="key file written by 'medfool range keys add'")
    q.add_argument("--api-key", default=None, help="one key given as text (at least 16 characters)")
    q.add_argument("--answer", default="probs", choices=("probs", "rounded", "label"),
                   help="what a caller gets: probabilities, probabilities rounded to 2 decimals, or the label")
    q.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    q.add_argument("--port", type=int_in(1, 65535), default=8000)
    q.add_argument("--rate", type=float, default=20.0, help="queries per second per key (default 20)")
    q.add_argument("--burst", type=int_in(1), default=40, help="burst size of the token bucket (default 40)")
    q.add_argument("--daily", type=int_in(0), default=100_000, help="queries per key per UTC day; 0: no budget")
    q.add_argument("--max-bytes", type=int_in(1), default=4 << 20, help="largest request body (default 4 MiB)")
    q.add_argument("--defence", action="append", default=None, type=parse_transform, metavar="TRANSFORM",
                   help="an input-transform defence in front of the model, as 'medfool defend transform' takes it "
                        "(jpeg, median:size=3, bit-depth:bits=4, ...; repeat to chain); a defended checkpoint from "
                        "'medfool defend' is served as any model")
    q.add_argument("--detector", default=None, choices=("blacklight", "knn"),
                   help="a stateful attack detector in front of the model: blacklight (Li et al. 2022; one hash "
                        "table across keys) or knn (Chen, Carlini & Wagner 2019; per key, mean distance to the 50 "
                        "nearest earlier queries)")
    q.add_argument("--on-detect", default="reject", choices=("reject", "flag"),
                   help="a flagged query is refused (reject, the default) or answered and only logged (flag)")
    q.add_argument("--encoder", default="pixels", choices=("pixels", "features"),
                   help="knn: the space distances are measured in (pixels, or the model's deep features)")
    q.add_argument("--fpr", type=float_in(0.0, 1.0), default=0.001,
                   help="knn: false-positive rate its threshold is set for on training images (default 0.001)")
    q.add_argument("--calibrate-on", default=None, metavar="DATASET",
                   help="knn: the dataset whose training split sets the threshold (default: the model's own)")
    q.add_argument("--window", default=None, metavar="CENTRE,WIDTH",
                   help="DICOM uploads: the native-unit window mapped to [0, 1] (default: each file's own)")
    q.add_argument("--seed", type=int, default=0, help="seed of the knn calibration sample (default 0)")
    q.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    q.add_argument("--out", default="range", help="folder of the query log (default ./range)")
    q.set_defaults(func=cmd_serve)


def _add_report(rsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = rsub.add_parser("report", help="per attack run: noticed after how many queries, refusals, keys burnt, "
                                       "success",
                        description="Read a range's query log: for each run (the X-Run-Id its client sent; 'medfool "
                                    "attack' sends its --out folder's name) the queries it made, whether and after "
                                    "how many of them the detector noticed it, the queries refused and the keys "
                                    "burnt (flagged at least once). With --runs, each attack folder's success and "
                                    "the queries the attack counted are set beside the log's count.")
    r.add_argument("log", help="the range's --out folder, or its queries.sqlite")
    r.add_argument("--runs", nargs="+", default=None, metavar="DIR", help="folders 'medfool attack --out' wrote")
    r.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")
    r.set_defaults(func=cmd_report)
