"""Stateful detection at the range: how soon each detector notices each query attack, how often
it flags a hospital's benign traffic, and what an attacker who adapts to refusals still achieves.

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/range_detection.py
        --model runs/lung-s0 --dataset lc25000_lung [--images 20] [--seed 0] [--json OUT]
        python benchmarks/range_detection.py --render RESULTS.json [RESULTS.json ...]
        (writes benchmarks/results/range_detection_DATASET.json unless --json names another file)

The detectors are those ``medfool range serve --detector`` puts in front of the model, run in
process through :func:`medfool.defences.stateful.guarded` (the same verdicts as over HTTP,
without the network; tests/serve checks that an attack over HTTP equals the attack in process):
Blacklight (window 20, top 50, quantisation 50, hit at 25) and the k-NN detector (k = 50;
threshold for 0.1 % false positives on 2,000 training images; pixels, and the model's deep
features).

1. Detection: each of ``--images`` correctly classified test images (seeded) is attacked alone,
   with fresh detectors watching in flag mode (they see every query, refuse none), by Square
   (L-inf 8/255, 1,000 queries), SimBA-DCT (1,000), HopSkipJump (labels, 1,000), Boundary
   (labels, 1,000) and one-pixel DE (uniform start, population 100, 10 generations). Reported:
   the median number of queries before each detector fires (an image never noticed counts as
   never, and the share noticed is given beside it) and the attack's success.
2. False positives on benign streams, each from a fresh detector, one account: the test split
   in order; 200 studies each sent 3 times; 200 studies each sent with 4 variants (1-pixel
   shifts right and down, JPEG at quality 90, brightness +2/255).
3. The adaptive attacker: Square and HopSkipJump against Blacklight and the pixel k-NN detector
   in reject mode, naive (a refused query is no progress) and re-shaping refused queries (noise
   growing from 4/255, kept in the 8/255 ball for Square, up to 4 re-sends, the re-shaped image
   adopted by the attack), and a Sybil Square spreading its queries over 10 keys in turn.
   Success is judged on the deployed model reading the returned image, beside the attack
   without a detector; queries include every re-send.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfool.attacks import get_attack
from medfool.attacks.blackbox.reshape import reshaping
from medfool.data import load_dataset
from medfool.defences.stateful import (
    Blacklight,
    KnnDetector,
    StatefulDetector,
    feature_encoder,
    guarded,
    knn_threshold,
    pixel_encoder,
)
from medfool.models import load_classifier
from medfool.models.classifier import Classifier
from medfool.models.predict import from_classifier
from medfool.utils.stats import wilson
from record import slug, write_results

ATTACKS: dict[str, tuple[str, dict[str, Any], str]] = {
    "square": ("square", {"eps": 8 / 255, "queries": 1000}, "probs"),
    "simba": ("simba", {"queries": 1000}, "probs"),
    "hsj": ("hsj", {"queries": 1000}, "labels"),
    "boundary": ("boundary", {"queries": 1000}, "labels"),
    "onepixel": ("onepixel", {"pixels": 1, "init": "uniform", "population": 100, "generations": 10}, "probs"),
}
OARS_BLACKLIGHT = 0.776  # Feng et al. 2023: OARS-style attacks' success against Blacklight
EPS = 8 / 255


def fooled(model: Classifier, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, attack: str) -> bool:
    """Judged as deployed: the model reading the returned image gets it wrong, within the budget
    of the threat model: L-inf 8/255 for Square, one pixel for one-pixel DE, and for the
    minimum-norm attacks (SimBA, HopSkipJump, Boundary) the L2 radius of that L-inf ball,
    8/255 x sqrt(pixels): an unbounded "success" is any other image."""
    with torch.no_grad():
        wrong = bool(model(x_adv).argmax(1)[0] != y[0])
    d = (x_adv - x).flatten()
    if attack == "square":
        return wrong and float(d.abs().max()) <= EPS + 1e-6
    if attack == "onepixel":
        return wrong
    return wrong and float(d.norm()) <= EPS * d.numel() ** 0.5 + 1e-6


class Detectors:
    """Fresh detectors of each kind (the k-NN threshold is computed once)."""

    def __init__(self, model: Classifier, benign: torch.Tensor) -> None:
        self.model = model
        self.features = feature_encoder(model)
        self.thresholds = {
            "knn-pixels": knn_threshold(_encode(pixel_encoder, benign), 50, 0.001),
            "knn-features": knn_threshold(_encode(self.features, benign), 50, 0.001),
        }

    names = ("blacklight", "knn-pixels", "knn-features")

    def fresh(self, name: str) -> StatefulDetector:
        if name == "blacklight":
            return Blacklight()
        enc = pixel_encoder if name == "knn-pixels" else self.features
        return KnnDetector(enc, self.thresholds[name], k=50, name=name)


def _encode(enc: Any, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([enc(x[s:s + 256]) for s in range(0, x.shape[0], 256)]).float()


class Watch:
    """Every input of the model's forward pass, judged by every detector (flag mode): the
    1-based index of the first flagged query, per detector."""

    def __init__(self, model: Classifier, detectors: dict[str, StatefulDetector]) -> None:
        self.detectors, self.seen, self.busy = detectors, 0, False
        self.first: dict[str, int | None] = dict.fromkeys(detectors)
        self.hook = model.register_forward_pre_hook(self._see)

    def _see(self, _m: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if self.busy:  # the feature encoder's own forward pass is not a query
            return
        self.busy = True
        x = args[0].detach()
        try:
            for name, det in self.detectors.items():
                verdicts = det.observe(x, "attacker")
                if self.first[name] is None and any(verdicts):
                    self.first[name] = self.seen + verdicts.index(True) + 1
        finally:
            self.busy = False
        self.seen += x.shape[0]

    def close(self) -> None:
        self.hook.remove()


def pick_images(model: Classifier, dataset: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    test = load_dataset(dataset, size=model.meta.input_shape[1], allow_download=False).split("test")
    x, y = test.get(test.sample_index(min(len(test), 4 * n), seed=seed))
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return x[ok][:n], y[ok][:n]


def detection(model: Classifier, dets: Detectors, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, (name, opts, output) in ATTACKS.items():
        attack = get_attack(name, **opts)
        rows = []
        start = time.perf_counter()
        for i in range(x.shape[0]):
            watch = Watch(model, {d: dets.fresh(d) for d in dets.names})
            victim = model if name == "onepixel" else from_classifier(model, output)  # type: ignore[arg-type]
            r = attack(victim, x[i:i + 1], y[i:i + 1], seed=seed, ids=[i])
            watch.close()
            rows.append({"success": fooled(model, x[i:i + 1], r.x_adv, y[i:i + 1], label),
                         "l2": float((r.x_adv - x[i:i + 1]).norm()), "queries": watch.seen,
                         "first_flag": dict(watch.first),
                         "detector_ms_per_query": {d: 1000 * det.seconds / max(det.observed, 1)
                                                   for d, det in watch.detectors.items()}})
        summary: dict[str, Any] = {"images": len(rows), "seconds": round(time.perf_counter() - start, 1),
                                   "success": sum(r["success"] for r in rows) / len(rows),
                                   "median_queries": statistics.median(r["queries"] for r in rows)}
        for d in dets.names:
            firsts = [r["first_flag"][d] for r in rows]
            noticed = [f for f in firsts if f is not None]
            summary[d] = {"noticed": len(noticed) / len(rows),
                          "median_queries_to_detection": statistics.median(
                              [f if f is not None else float("inf") for f in firsts]),
                          "ms_per_query": statistics.mean(r["detector_ms_per_query"][d] for r in rows)}
        out[label] = {"summary": summary, "per_image": rows}
        print(f"  {label}: success {summary['success']:.2f}; " + "; ".join(
            f"{d} noticed {summary[d]['noticed']:.2f}, median {summary[d]['median_queries_to_detection']}"
            for d in dets.names), flush=True)
    return out


def _jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    back = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255
    back = back[..., None] if back.ndim == 2 else back
    return torch.from_numpy(back).permute(2, 0, 1)


VARIANTS = {
    "1-pixel shift right": lambda img: torch.roll(img, 1, dims=2),
    "1-pixel shift down": lambda img: torch.roll(img, 1, dims=1),
    "JPEG at quality 90": lambda img: _jpeg(img, 90),
    "brightness +2/255": lambda img: (img + 2 / 255).clamp(0, 1),
}


def benign_streams(test: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """Traffic that looks like a hospital's: the split in order, studies re-sent, and studies
    sent again changed the way a second export changes them (all variants, then each alone: the
    study followed by its variant)."""
    studies = test[:n]
    every = [v for img in studies for v in (img, *(f(img) for f in VARIANTS.values()))]
    streams = {"test split in order": test, "each study sent 3 times": studies.repeat_interleave(3, dim=0),
               "shifts and re-encodings of each study": torch.stack(every)}
    for name, f in VARIANTS.items():
        streams[f"each study, then {name}"] = torch.stack([v for img in studies for v in (img, f(img))])
    return streams


def false_positives(dets: Detectors, test: torch.Tensor, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stream, xs in benign_streams(test, n).items():
        row: dict[str, Any] = {"queries": xs.shape[0]}
        for d in dets.names:
            det = dets.fresh(d)
            flags = sum(sum(det.observe(xs[s:s + 64], "hospital")) for s in range(0, xs.shape[0], 64))
            lo, hi = wilson(flags, xs.shape[0])
            row[d] = {"flagged": flags, "rate": flags / xs.shape[0], "ci95": [lo, hi]}
        out[stream] = row
        print(f"  benign '{stream}' ({xs.shape[0]} queries): " + "; ".join(
            f"{d} {row[d]['rate']:.4f}" for d in dets.names), flush=True)
    return out


def adaptive(model: Classifier, dets: Detectors, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label in ("square", "hsj"):
        name, opts, output = ATTACKS[label]
        attack = get_attack(name, **opts)
        row: dict[str, Any] = {}
        for d in (None, "blacklight", "knn-pixels"):
            modes = ("none",) if d is None else (("naive", "reshape", "sybil") if label == "square" else
                                                  ("naive", "reshape"))
            for mode in modes:
                n_fooled, queries, resent = 0, 0, 0
                for i in range(x.shape[0]):
                    gen = torch.Generator().manual_seed(seed * 1000 + i)
                    if d is None:
                        victim = from_classifier(model, output)
                    else:
                        det = dets.fresh(d)
                        victim = guarded(model, det, output=output, keys=10 if mode == "sybil" else 1)
                        if mode == "reshape":
                            victim, state = reshaping(victim, gen, x0=x[i] if label == "square" else None,
                                                      eps=opts.get("eps"))
                    r = attack(victim, x[i:i + 1], y[i:i + 1], seed=seed, ids=[i])
                    n_fooled += int(fooled(model, x[i:i + 1], r.x_adv, y[i:i + 1], label))
                    queries += int(r.queries[0])
                    if d is not None and mode == "reshape":
                        resent += state.resent
                        queries += state.resent
                n = x.shape[0]
                key = "no detector" if d is None else f"{d} / {mode}"
                row[key] = {"success": n_fooled / n, "ci95": list(wilson(n_fooled, n)), "queries": queries,
                            "resent": resent}
                print(f"  adaptive {label} {key}: success {n_fooled}/{n}", flush=True)
        out[label] = row
    return out


def render(paths: list[str]) -> str:
    lines = ["| data | attack | success | " + " | ".join(f"{d}: noticed, median queries" for d in Detectors.names)
             + " |", "|---" * (3 + len(Detectors.names)) + "|"]
    fp = ["| data | benign stream | queries | " + " | ".join(Detectors.names) + " |",
          "|---" * (3 + len(Detectors.names)) + "|"]
    ad = ["| data | attack | detector / attacker | success [95 % CI] | queries |", "|---|---|---|---|---|"]
    for p in paths:
        res = json.loads(Path(p).read_text())
        data = res["dataset"]
        for label, block in res["detection"].items():
            s = block["summary"]
            cells = [f"{s[d]['noticed']:.0%}, {_q(s[d]['median_queries_to_detection'])}" for d in Detectors.names]
            lines.append(f"| {data} | {label} | {s['success']:.0%} | " + " | ".join(cells) + " |")
        for stream, row in res.get("false_positives", {}).items():
            cells = [f"{row[d]['rate']:.2%} ({row[d]['flagged']})" for d in Detectors.names]
            fp.append(f"| {data} | {stream} | {row['queries']} | " + " | ".join(cells) + " |")
        for label, row in res.get("adaptive", {}).items():
            for key, v in row.items():
                ad.append(f"| {data} | {label} | {key} | {v['success']:.0%} [{v['ci95'][0]:.0%}, {v['ci95'][1]:.0%}]"
                          f" | {v['queries']:,} |")
    return "\n".join([*lines, "", *fp, "", *ad])


def _q(v: float | None) -> str:
    return "never" if v is None or v == float("inf") else f"{v:g}"  # JSON keeps infinity as null


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--dataset")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--benign", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--render", nargs="+", default=None, metavar="RESULTS")
    ap.add_argument("--only", choices=("benign", "adaptive"), default=None,
                    help="one part only, merged into the results file given by --json")
    args = ap.parse_args()
    if args.render:
        print(render(args.render))
        return
    torch.manual_seed(args.seed)
    model, _ = load_classifier(args.model)
    ds = load_dataset(args.dataset, size=model.meta.input_shape[1], allow_download=False)
    train = ds.split("train")
    benign, _ = train.get(train.sample_index(min(2000, len(train)), seed=args.seed))
    dets = Detectors(model, benign)
    x, y = pick_images(model, args.dataset, args.images, args.seed)
    print(f"{args.dataset}: {x.shape[0]} images; knn thresholds {dets.thresholds}", flush=True)
    test_x, _ = ds.split("test").tensors()
    if args.only:  # re-measure one part of an earlier run, keeping the rest of its file
        path = Path(args.json or f"benchmarks/results/range_detection_{slug(args.dataset)}.json")
        old = json.loads(path.read_text())
        kept = {k: v for k, v in old.items() if k not in ("command", "environment", "written")}
        kept[{"benign": "false_positives", "adaptive": "adaptive"}[args.only]] = \
            false_positives(dets, test_x, args.benign) if args.only == "benign" else adaptive(model, dets, x, y,
                                                                                            args.seed)
        write_results(f"range_detection_{slug(args.dataset)}", kept, str(path))
        return
    results: dict[str, Any] = {"dataset": args.dataset, "model": args.model, "images": x.shape[0],
                               "seed": args.seed, "knn_thresholds": dets.thresholds,
                               "published_oars_vs_blacklight": OARS_BLACKLIGHT}
    name = f"range_detection_{slug(args.dataset)}"
    results["detection"] = detection(model, dets, x, y, args.seed)
    results["detection_summary"] = {k: v["summary"] for k, v in results["detection"].items()}
    write_results(name, results, args.json)  # each part as it is done
    results["false_positives"] = false_positives(dets, test_x, args.benign)
    write_results(name, results, args.json)
    results["adaptive"] = adaptive(model, dets, x, y, args.seed)
    write_results(name, results, args.json)


if __name__ == "__main__":
    main()
