"""Scale-out: what each audit stage costs per image, what 1 and 2 Ray workers do here, and the
arithmetic for a PCam-scale audit on a cluster.

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/scale.py --model runs/lung-s0/model.safetensors
        [--dataset lc25000_lung] [--n 64] [--skip-densenet] [--only-throughput | --only-plan] [--json OUT]
        (writes benchmarks/results/scale.json unless --json names another file)

1. Per-image cost of each stage at the default and the ``standard`` budgets: the audit's own
   planner counts the worst-case model passes of every unit, and the model is timed on this
   machine (what ``medfool audit --estimate`` prints), for the given small CNN at its size and a
   MONAI DenseNet-121 at 224 px (random weights: the cost does not depend on them).
2. Throughput: one CPU-bound stage (one-pixel differential evolution, the default budget, in
   units of 8 images) audited in this process, on 1 Ray worker and on 2, one after the other in
   one run; the ratio of the 2-worker to the 1-worker wall time.
3. The plan: for a PCam-sized test split (32,768 tiles) at the ``standard`` preset, the cells,
   the passes, the hours per node at a stated per-node throughput, and the store's write rate.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from medfool.data import load_dataset, make_synthetic
from medfool.models import load_classifier
from medfool.models.classifier import Classifier
from medfool.runs.audit.config import AuditConfig, load_config
from medfool.runs.audit.cost import measure_speed
from medfool.runs.audit.job import AuditJob, audit
from medfool.runs.audit.runner import audit_images, plan, stage_rows
from medfool.runs.common import DataSource
from record import write_results

PCAM_TEST = 32_768
ONEPIXEL_ONLY = """\
n = {n}
batch_size = 8
[corruptions]
enabled = false
[whitebox]
enabled = false
[blackbox]
enabled = false
[patch]
enabled = false
[maps]
enabled = false
[onepixel]
n = {n}
"""


def stage_costs(model: Classifier, dataset: object, cfg: AuditConfig) -> dict[str, dict[str, float]]:
    """Per stage: units, gradient and forward passes per audited image, seconds per image here."""
    ids, x, y = audit_images(dataset, cfg)  # type: ignore[arg-type]
    units, _ = plan(model, dataset, cfg, ids, x, y, lambda: b"", None, None)  # type: ignore[arg-type]
    speed = measure_speed(model, x[: min(len(ids), 16)])
    out = {}
    for stage, count, passes in stage_rows(units):
        if passes is None:
            continue
        out[stage] = {"units": count, "gradient_passes_per_image": passes.gradients / len(ids),
                      "forward_passes_per_image": passes.forwards / len(ids),
                      "s_per_image": speed.seconds(passes) / len(ids)}
    out["_speed"] = {"forward_ms": speed.forward_s * 1e3, "gradient_ms": speed.gradient_s * 1e3}
    return out


def densenet_costs(cfg: AuditConfig) -> dict[str, dict[str, float]]:
    from medfool.models.architectures import build
    from medfool.models.classifier import ModelMeta

    ds = make_synthetic(channels=3, size=224, per_split=(8, 8, 16), seed=0)
    net = build("densenet121", in_channels=3, num_outputs=3)
    meta = ModelMeta(task="multi-class", class_names=ds.info.class_names, input_shape=(3, 224, 224),
                     mean=(0.5,) * 3, std=(0.25,) * 3, num_outputs=3, arch="densenet121")
    model = Classifier(net, meta).eval()
    return stage_costs(model, ds, replace(cfg, n=16, patch=replace(cfg.patch, enabled=False)))


# (label, workers, torch threads per worker): in process with every core's threads; one worker
# per core; one worker with both cores' threads (the default share for --workers 1 here)
RUNS = (("in_process", None, None), ("workers_1_thread_1", 1, 1), ("workers_2_thread_1", 2, 1),
        ("workers_1_threads_2", 1, 2))


def throughput(model_path: str, dataset: str, n: int) -> dict[str, float]:
    """Wall time of the same one-pixel audit in process and on Ray workers (Ray's start and the
    workers' model loading included), one after the other in one run."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "onepixel.toml"
        cfg.write_text(ONEPIXEL_ONLY.format(n=n))
        for label, workers, threads in RUNS:
            start = time.perf_counter()
            audit(AuditJob(model=model_path, data=DataSource(dataset, allow_download=False),
                           out=Path(tmp) / label, config=str(cfg), workers=workers, worker_threads=threads),
                  lambda _: None)
            out[f"{label}_s"] = time.perf_counter() - start
            print(f"one-pixel audit of {n} images, {label}: {out[f'{label}_s']:.1f} s", flush=True)
    out["ratio_2_to_1_worker_one_thread_each"] = out["workers_2_thread_1_s"] / out["workers_1_thread_1_s"]
    out["ratio_2_workers_to_1_worker_with_2_threads"] = out["workers_2_thread_1_s"] / out["workers_1_threads_2_s"]
    out["ratio_2_workers_to_in_process"] = out["workers_2_thread_1_s"] / out["in_process_s"]
    return out


# stages that do not grow with the audited tiles: the clean split and the first batch once,
# maps on [maps] n images, one-pixel DE on [onepixel] n images (defaults: 2 and 32)
FIXED = {"clean evaluation": 16, "sanity checks": 16, "vulnerability maps": 16, "1-pixel": 32, "3-pixel": 32}


def pcam_plan(costs: dict[str, dict[str, float]], batch: int, per_node_images_s: float,
              nodes: tuple[int, ...]) -> dict[str, object]:
    """Cells, passes and hours for 32,768 tiles: the DenseNet's passes per image times the tiles
    (times its fixed images for the stages in FIXED), at ``per_node_images_s`` forward+backward
    passes per second per node (a stated assumption: no GPU was measured here)."""
    stages = {k: v for k, v in costs.items() if not k.startswith("_")}
    images = {k: FIXED.get(k, PCAM_TEST) for k in stages}
    grad = sum(v["gradient_passes_per_image"] * images[k] for k, v in stages.items())
    fwd = sum(v["forward_passes_per_image"] * images[k] for k, v in stages.items())
    # the costs were planned on 16 images, one chunk (batch 64): a stage's units are its units per chunk
    cells = sum(int(v["units"]) * (1 if k in FIXED else -(-PCAM_TEST // batch)) for k, v in stages.items())
    passes = grad + fwd / 3  # a forward pass costs about a third of a forward+backward pass
    rows = []
    for n in nodes:
        hours = passes / (n * per_node_images_s) / 3600
        rows.append({"nodes": n, "hours": hours, "cells_per_s": cells / (hours * 3600)})
    return {"tiles": PCAM_TEST, "batch": batch, "cells": cells, "gradient_passes": grad, "forward_passes": fwd,
            "per_node_gradient_passes_per_s": per_node_images_s, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--n", type=int, default=64, help="images of the one-pixel throughput audit")
    ap.add_argument("--skip-densenet", action="store_true")
    ap.add_argument("--only-throughput", action="store_true", help="measure only the worker throughput")
    ap.add_argument("--only-plan", action="store_true", help="only the DenseNet-121's costs and the cluster plan")
    ap.add_argument("--gpu-passes-per-s", type=float, default=2000.0,
                    help="assumed forward+backward passes per second per GPU node for the plan")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    model, _ = load_classifier(args.model)
    dataset = args.dataset or str(model.meta.dataset)
    ds = load_dataset(dataset, allow_download=False)
    default, standard = load_config(None), load_config(None)
    standard = replace(standard, whitebox=replace(standard.whitebox, ensemble="standard"))
    result: dict[str, object] = {"model": args.model, "dataset": dataset, "threads": torch.get_num_threads()}
    if args.only_plan:
        dense = densenet_costs(standard)
        result["densenet121_224"] = {"standard": dense}
        result["pcam_plan"] = pcam_plan(dense, 64, args.gpu_passes_per_s, (1, 4, 16, 64))
        print(result["pcam_plan"])
        write_results("scale_plan", result, args.json)
        return
    result["throughput"] = throughput(args.model, dataset, args.n)
    if args.only_throughput:
        write_results("scale_throughput", result, args.json)
        return
    result["small_cnn"] = {"default": stage_costs(model, ds, replace(default, n=32)),
                           "standard": stage_costs(model, ds, replace(standard, n=32))}
    if not args.skip_densenet:
        dense = densenet_costs(standard)
        result["densenet121_224"] = {"standard": dense}
        result["pcam_plan"] = pcam_plan(dense, 64, args.gpu_passes_per_s, (1, 4, 16, 64))
    for name, block in result.items():
        print(name, block)
    write_results("scale", result, args.json)


if __name__ == "__main__":
    main()
