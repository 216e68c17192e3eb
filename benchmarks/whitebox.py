"""White-box attack speed on CPU, as ratios measured in one process on one model and batch.

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/whitebox.py [--n 128] [--model CKPT [--dataset NAME]]
        [--json OUT]

Without --model, trains the small CNN on the PathMNIST subset first (about 30 s). A given model
is measured on the test split of the dataset it was trained on (its checkpoint's record), or
of --dataset. Writes the figures to OUT, by default benchmarks/results/whitebox_DATASET.json.
Needs the peers for the comparisons: pip install adversarial-robustness-toolbox packaging;
pip install --no-deps torchattacks.

Rows:
* floor: the model's forward+backward time on the batch (loss gradient w.r.t. the input);
* PGD-10 (fixed schedule, no early stop) / (10 x floor)  -- target <= 1.15;
* PGD-10 with early stop / fixed schedule                 -- < 1 when images break early;
* medfool PGD / torchattacks PGD and / ART PGD            -- target <= 1.00, timed interleaved;
  shown for the default (early stop), for the fixed-schedule loop alone, and for the fixed
  full call, which also runs the clean and the final forward passes that give clean_correct
  and the recomputed success mask (the peers compute neither); an audit shares the clean
  logits between attacks, leaving one extra forward;
* C&W: time for medfool to reach torchattacks' median L2 and success / torchattacks' time -- target <= 0.5;
* DeepFool: medfool time per image / best peer's, at equal success -- target <= 0.5.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch

from medfool.attacks import get_attack
from medfool.attacks.norms import l2
from medfool.data import load_dataset
from medfool.data.dataset import Dataset
from medfool.models import Classifier, load_classifier
from medfool.models.train import TrainConfig, fit
from record import write_results  # benchmarks/record.py (the script folder is on sys.path)


def timed(fn: Callable[[], object], repeat: int = 5) -> tuple[float, object]:
    """Median wall time of ``repeat`` runs (after one warm-up) and the last output."""
    out = fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median time of each function, run in turn ``rounds`` times after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def stats(model: Classifier, x: torch.Tensor, y: torch.Tensor, xa: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        s = model.predict(xa) != y
    return float(s.float().mean()), float(l2(xa - x)[s].median()) if bool(s.any()) else float("nan")


def victim(path: str | None, dataset: str | None) -> tuple[Classifier, Dataset]:
    """The model to attack and its data: a given checkpoint on ``dataset`` or the one it was
    trained on; without one, the small CNN trained here on the PathMNIST subset."""
    if path is None:
        ds = load_dataset(dataset or "pathmnist")
        return fit(ds, TrainConfig(seed=0)).model.eval(), ds
    model = load_classifier(path)[0]
    name = dataset or model.meta.dataset
    if not name:
        raise SystemExit(f"{path} does not record the dataset it was trained on; give --dataset")
    return model, load_dataset(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=128, help="batch size (correctly classified test tiles)")
    parser.add_argument("--model", default=None, help="checkpoint (default: train the small CNN on PathMNIST)")
    parser.add_argument("--dataset", default=None, help="default: the dataset the model was trained on")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None,
                        help="results file (default: benchmarks/results/whitebox_DATASET.json)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    model, ds = victim(args.model, args.dataset)
    x, y = ds.split("test").tensors()
    with torch.no_grad():
        ok = model.predict(x) == y
    x, y = x[ok][: args.n], y[ok][: args.n]
    n = x.shape[0]
    print(f"{ds.info.name}, {model.meta.arch or 'external model'}, {n} correctly classified test images, "
          f"{args.threads} threads, torch {torch.__version__}")
    rows: list[tuple[str, float, float | None]] = []
    found: dict[str, object] = {"dataset": ds.info.name, "model": args.model, "arch": model.meta.arch, "n": n,
                                "threads": args.threads}

    def done() -> int:
        code = print_rows(rows)
        found["rows"] = [{"measure": name.strip(), "ratio": ratio, "target_ratio": target,
                          "passed": None if target is None else ratio <= target} for name, ratio, target in rows]
        write_results(f"whitebox_{ds.info.name}", found, args.json)
        return code

    eps = 8 / 255
    alpha = 2.5 * eps / 10
    try:
        import torchattacks
        from art.attacks.evasion import DeepFool as ArtDeepFool
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier
        peers = True
    except ImportError as exc:
        print(f"peers not installed ({exc}); comparing with the floor only")
        peers = False

    from medfool.attacks.base import Counter
    from medfool.attacks.evasion.pgd import PGDConfig, pgd_loop
    from medfool.attacks.goal import Goal
    from medfool.utils.rng import ImageStreams

    with torch.no_grad():
        clean = model(x)
    cfg = PGDConfig(eps=eps, steps=10, early_stop=False)
    fixed = get_attack("pgd", eps=eps, steps=10, early_stop=False)
    early = get_attack("pgd", eps=eps, steps=10)

    def ten_floors() -> None:
        for _ in range(10):
            xa = x.clone().requires_grad_(True)
            torch.autograd.grad(torch.nn.functional.cross_entropy(model(xa), y), xa)

    contenders: dict[str, Callable[[], object]] = {  # interleaved: machine drift hits all alike
        "10 x floor": ten_floors,
        "loop": lambda: pgd_loop(model, x, Goal(model.task, y), ImageStreams(0, torch.arange(n), x.device),
                                 Counter(n, x.device), cfg),
        "full": lambda: fixed(model, x, y),
        "shared": lambda: fixed(model, x, y, clean_logits=clean),
        "early": lambda: early(model, x, y),
    }
    if peers:
        contenders["torchattacks"] = lambda: torchattacks.PGD(model, eps=eps, alpha=alpha, steps=10)(x, y)
    times = interleaved(contenders, rounds=9)
    r_early = early(model, x, y)
    print(f"floor: forward+backward on the batch {times['10 x floor'] * 100:.1f} ms")
    print(f"PGD-10 8/255: 10 x floor {times['10 x floor']:.3f} s, fixed schedule {times['full']:.3f} s, early stop "
          f"{times['early']:.3f} s (mean {float(r_early.gradients.float().mean()):.2f} gradients per image, "
          f"success {r_early.success_rate:.3f})")
    pgd: dict[str, object] = {"eps_255": 8, "floor_ms_per_batch": times["10 x floor"] * 100,
                              "ten_floors_s": times["10 x floor"], "fixed_s": times["full"], "loop_s": times["loop"],
                              "shared_clean_s": times["shared"],
                              "early_stop_s": times["early"],
                              "early_stop_gradients_per_image": float(r_early.gradients.float().mean()),
                              "early_stop_success": r_early.success_rate}
    found["pgd10"] = pgd
    rows.append(("PGD-10 fixed, full call / (10 x floor)", times["full"] / times["10 x floor"], 1.15))
    rows.append(("PGD-10 fixed, loop alone / (10 x floor)", times["loop"] / times["10 x floor"], None))
    rows.append(("PGD-10 early stop (default) / fixed schedule", times["early"] / times["full"], None))
    if not peers:
        return done()
    t_ta = times["torchattacks"]
    pgd["torchattacks_s"] = t_ta
    rows.append(("medfool PGD-10 early stop (default) / torchattacks PGD-10", times["early"] / t_ta, 1.0))
    rows.append(("medfool PGD-10 fixed, loop alone / torchattacks PGD-10", times["loop"] / t_ta, 1.0))
    rows.append(("medfool PGD-10 fixed, full call / torchattacks PGD-10", times["full"] / t_ta, None))
    rows.append(("  same, clean logits shared (as in an audit) / torchattacks", times["shared"] / t_ta, None))
    art_clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                nb_classes=model.num_classes, clip_values=(0.0, 1.0))
    t_art, _ = timed(lambda: ProjectedGradientDescent(art_clf, eps=eps, eps_step=alpha, max_iter=10, batch_size=n,
                                                      verbose=False).generate(x.numpy()), repeat=1)
    rows.append(("medfool PGD-10 fixed, full call / ART PGD-10", times["full"] / t_art, 1.0))
    pgd["art_s"] = t_art

    # C&W: torchattacks' defaults set the bar; medfool's cheapest setting that reaches it
    t_tacw, xa = timed(lambda: torchattacks.CW(model, c=1, kappa=0, steps=50, lr=0.01)(x, y), repeat=1)
    ta_rate, ta_l2 = stats(model, x, y, xa)
    print(f"torchattacks C&W (c=1, 50 steps, lr 0.01): success {ta_rate:.3f}, median L2 {ta_l2:.4f}, {t_tacw:.2f} s")
    cw_runs: list[dict[str, object]] = [{"contender": "torchattacks C&W (c=1, 50 steps, lr 0.01)", "success": ta_rate,
                                         "median_l2": ta_l2, "wall_s": t_tacw}]
    found["cw"] = cw_runs
    reached = None
    for steps in (1, 2, 5, 10, 20, 50):
        t_cw, r = timed(lambda s=steps: get_attack("cw", steps=s, search_steps=1)(model, x, y), repeat=1)
        rate, med = float(r.success.float().mean()), float(r.l2[r.success].median())
        print(f"  medfool C&W {steps:>2} steps x 1 search: success {rate:.3f}, median L2 {med:.4f}, {t_cw:.2f} s")
        cw_runs.append({"contender": f"medfool C&W {steps} steps x 1 search", "success": rate, "median_l2": med,
                        "wall_s": t_cw})
        if rate >= ta_rate and med <= ta_l2:
            reached = t_cw
            break
    rows.append(("C&W: medfool time to torchattacks' L2 / torchattacks time",
                 reached / t_tacw if reached else float("inf"), 0.5))
    t_def, r_def = timed(lambda: get_attack("cw")(model, x, y), repeat=1)
    print(f"  medfool C&W defaults: success {r_def.success_rate:.3f}, "
          f"median L2 {float(r_def.l2[r_def.success].median()):.4f}, {t_def:.2f} s")
    cw_runs.append({"contender": "medfool C&W defaults", "success": r_def.success_rate,
                    "median_l2": float(r_def.l2[r_def.success].median()), "wall_s": t_def})

    # DeepFool: per image, at equal success
    t_df, r_df = timed(lambda: get_attack("deepfool")(model, x, y))
    t_tadf, xa_ta = timed(lambda: torchattacks.DeepFool(model, steps=50, overshoot=0.02)(x, y), repeat=1)
    t_artdf, xa_art = timed(lambda: ArtDeepFool(art_clf, max_iter=50, epsilon=0.02, batch_size=n,
                                                verbose=False).generate(x.numpy()), repeat=1)
    deepfool: list[dict[str, object]] = []
    for name, t, xa_ in (("medfool", t_df, r_df.x_adv), ("torchattacks", t_tadf, xa_ta),
                         ("ART", t_artdf, torch.as_tensor(xa_art))):
        rate, med = stats(model, x, y, xa_)
        print(f"  DeepFool {name:<12} success {rate:.3f}, median L2 {med:.4f}, {t / n * 1e3:.2f} ms/image")
        deepfool.append({"contender": name, "success": rate, "median_l2": med, "ms_per_image": t / n * 1e3})
    found["deepfool"] = deepfool
    rows.append(("DeepFool: medfool / best peer, time per image", t_df / min(t_tadf, t_artdf), 0.5))
    return done()


def print_rows(rows: list[tuple[str, float, float | None]]) -> int:
    print()
    print(f"{'measure':<58} {'ratio':>7} {'target':>7}  verdict")
    ok = True
    for name, ratio, target in rows:
        verdict = "-" if target is None else ("PASS" if ratio <= target else "FAIL")
        ok &= verdict != "FAIL"
        print(f"{name:<58} {ratio:>7.2f} {f'<= {target:.2f}' if target else '':>7}  {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
