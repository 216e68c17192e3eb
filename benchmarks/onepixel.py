"""One-pixel attack: success, model evaluations and speed against torchattacks and ART.

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/onepixel.py --model CKPT [--dataset pathmnist]
        [--n 16] [--pixels 1] [--population 400] [--generations 100] [--no-peers] [--json OUT]

Peers: pip install adversarial-robustness-toolbox packaging; pip install --no-deps torchattacks.
One process, one model, the same correctly classified test tiles, the same population and
generations for everyone (Su et al.'s 400 x 100 by default). Every model evaluation is
counted by a wrapper around the model (one image's candidates count as that many evaluations).

Prints
  (a) per contender: success rate, model evaluations per image, wall time per image;
  (b) the query-success curve (success within a budget of B evaluations per image; all three
      stop an image at its first success, so one full run gives the whole curve), and the
      evaluations medfool needs to reach the better peer's full-budget success, as a ratio
      of that peer's evaluations (target <= 0.25);
  (c) medfool's evaluations per second over the model's plain forward throughput at the same
      batch size (target >= 0.9).
Writes the figures to OUT, by default benchmarks/results/onepixel_DATASET_kPIXELS.json.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from counting import Counting  # benchmarks/counting.py (the script folder is on sys.path)
from medfool.attacks import get_attack
from medfool.data import load_dataset
from medfool.models import Classifier, load_classifier
from record import write_results  # benchmarks/record.py (the script folder is on sys.path)


def per_image(run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], counter: Counting, model: Classifier,
              x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray, float]:
    """Run a peer image by image; returns success, evaluations per image and total seconds."""
    success, evals = [], []
    start = time.perf_counter()
    for i in range(x.shape[0]):
        before = counter.rows
        adv = run(x[i:i + 1], y[i:i + 1])
        evals.append(counter.rows - before)
        with torch.no_grad():
            success.append(bool(model.predict(torch.as_tensor(adv, dtype=torch.float32)) != y[i]))
    return np.array(success), np.array(evals), time.perf_counter() - start


def success_within(success: np.ndarray, evals: np.ndarray, budget: float) -> float:
    return float((success & (evals <= budget)).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="pathmnist")
    parser.add_argument("--model", required=True)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--pixels", type=int, default=1)
    parser.add_argument("--population", type=int, default=400)
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--eval-batch", type=int, default=0, help="candidates per model call (0: medfool's automatic "
                        "choice, also given to torchattacks)")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--json", default=None,
                        help="results file (default: benchmarks/results/onepixel_DATASET_kPIXELS.json)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(2)
    model = load_classifier(args.model)[0].eval()
    ds = load_dataset(args.dataset)
    test = ds.split("test")
    x, y = test.get(test.sample_index(4 * args.n))
    with torch.no_grad():
        ok = model.predict(x) == y
    x, y = x[ok][: args.n], y[ok][: args.n]
    n, p, g = x.shape[0], args.population, args.generations
    full = p * (g + 1)
    print(f"{args.dataset}: {n} correctly classified test tiles, k = {args.pixels}, population {p}, "
          f"{g} generations (at most {full:,} evaluations per image)")

    # the floor: plain forward throughput at medfool's evaluation batch size
    from medfool.attacks.fewpixel.pixels import auto_batch

    args.eval_batch = args.eval_batch or auto_batch(tuple(x.shape[1:]))
    # fresh memory for every call, as in an attack (re-using one batch keeps it in cache)
    reps = max(3, 8192 // args.eval_batch)
    xb = x[torch.arange(reps * args.eval_batch) % n].contiguous()
    with torch.no_grad():
        model(xb[: args.eval_batch])
        t = time.perf_counter()
        for r in range(reps):
            model(xb[r * args.eval_batch:(r + 1) * args.eval_batch])
        fwd_rate = reps * args.eval_batch / (time.perf_counter() - t)

    # (a') throughput on identical work, contenders interleaved (wall time per image at equal
    # evaluations is evaluations / throughput, and machine drift hits everyone alike)
    from medfool.attacks.fewpixel.pixels import candidate_logits

    owner = torch.arange(n).repeat_interleave(p)
    cand = torch.rand(n * p, 2 + x.shape[1], generator=torch.Generator().manual_seed(0))
    cand[:, 0] *= x.shape[2]
    cand[:, 1] *= x.shape[3]
    batch_np = x[owner].numpy()
    rates: dict[str, list[float]] = {"medfool": [], "plain forward": []}
    art_clf = None
    if not args.no_peers:
        from art.estimators.classification import PyTorchClassifier

        art_clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                    nb_classes=model.num_classes, clip_values=(0.0, 1.0))
        rates["ART predict (batch 128)"] = []
    for _ in range(5):
        for name in rates:
            t = time.perf_counter()
            with torch.no_grad():
                if name == "medfool":
                    candidate_logits(model, x, owner, cand, 1, args.eval_batch)
                elif name == "plain forward":
                    for s in range(0, n * p, args.eval_batch):
                        model(torch.from_numpy(batch_np[s:s + args.eval_batch]))
                else:
                    art_clf.predict(batch_np, batch_size=128)  # type: ignore[union-attr]
            rates[name].append(n * p / (time.perf_counter() - t))
    print("(a') evaluations per second on the same candidates, interleaved, medians of 5:")
    found: dict[str, object] = {"dataset": args.dataset, "model": args.model, "n": n, "pixels": args.pixels,
                                "population": p, "generations": g, "eval_batch": args.eval_batch,
                                "throughput_evals_per_s": {name: statistics.median(r) for name, r in rates.items()},
                                "forward_evals_per_s": fwd_rate}
    for name, r in rates.items():
        print(f"    {name:<26} {statistics.median(r):>8,.0f}/s")

    per_init: dict[str, dict[str, float]] = {}
    results: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    for init in ("prior", "uniform"):
        attack = get_attack("onepixel", pixels=args.pixels, population=p, generations=g, init=init,
                            eval_batch=args.eval_batch)
        r = attack(model, x, y, seed=0)
        # the clean and final forward passes are bookkeeping, not search: 2 of the counted queries
        results[f"medfool ({init})"] = (r.success.numpy(), r.queries.numpy() - 2, r.wall_s)
        rate = float((r.queries - 2).sum()) / r.wall_s
        print(f"medfool ({init}): {rate:,.0f} evaluations/s; forward alone at batch {args.eval_batch}: "
              f"{fwd_rate:,.0f}/s; ratio {rate / fwd_rate:.2f}  (c: >= 0.9)")
        per_init[init] = {"evals_per_s": rate, "over_forward": rate / fwd_rate}
    found["medfool_evals_per_s"] = per_init

    if not args.no_peers:
        import torchattacks
        from art.attacks.evasion import PixelAttack
        from art.estimators.classification import PyTorchClassifier

        counting = Counting(model).eval()
        ta = torchattacks.OnePixel(counting, pixels=args.pixels, steps=g, popsize=p, inf_batch=args.eval_batch)
        results["torchattacks OnePixel"] = per_image(lambda a, b: ta(a, b), counting, model, x, y)
        clf = PyTorchClassifier(model=counting, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                nb_classes=model.num_classes, clip_values=(0.0, 1.0))
        art = PixelAttack(clf, th=args.pixels, es=1, max_iter=g, targeted=False, verbose=False)
        results["ART PixelAttack"] = per_image(lambda a, b: art.generate(a.numpy(), b.numpy()), counting, model,
                                               x, y)

    print(f"\n(a) {'contender':<24} {'success':>8} {'evals/image':>12} {'s/image':>8}")
    for name, (succ, evals, secs) in results.items():
        print(f"    {name:<24} {succ.mean():>8.3f} {evals.mean():>12,.0f} {secs / n:>8.2f}")
    found["contenders"] = [{"contender": name, "success": float(succ.mean()), "evals_per_image": float(evals.mean()),
                            "s_per_image": secs / n} for name, (succ, evals, secs) in results.items()]

    budgets = [b for b in (400, 800, 1600, 3200, 6400, 10000, 20000, 40400) if b <= full] + [full]
    budgets = sorted(set(budgets))
    print("\n(b) success within B evaluations per image")
    print(f"    {'B':>7} " + " ".join(f"{name:>22}" for name in results))
    for b in budgets:
        print(f"    {b:>7,} " + " ".join(f"{success_within(s, e, b):>22.3f}" for s, e, _ in results.values()))
    found["success_within_budget"] = [{"evals_budget": b} | {name: success_within(s, e, b)
                                                              for name, (s, e, _) in results.items()}
                                      for b in budgets]
    peers = {k: v for k, v in results.items() if not k.startswith("medfool")}
    if peers:
        best_name = max(peers, key=lambda k: peers[k][0].mean())
        bar, peer_evals = peers[best_name][0].mean(), peers[best_name][1].sum()
        ours_s, ours_e, _ = results["medfool (prior)"]
        reached = [b for b in sorted(set(int(v) for v in ours_e) | {full}) if success_within(ours_s, ours_e, b) >= bar]
        to_peer: dict[str, object] = {"peer": best_name, "peer_success": float(bar), "peer_evals": int(peer_evals),
                                      "medfool_budget": None, "medfool_evals": None, "evals_over_peer": None}
        found["to_best_peer"] = to_peer
        if reached:
            spent = np.minimum(ours_e, reached[0]).sum()
            to_peer |= {"medfool_budget": reached[0], "medfool_evals": float(spent),
                        "evals_over_peer": float(spent / peer_evals)}
            print(f"    medfool reaches {best_name}'s full-budget success {bar:.3f} at B = {reached[0]:,} "
                  f"with {spent:,.0f} evaluations, {spent / peer_evals:.2f} of the peer's {peer_evals:,}  (b: <= 0.25)")
        else:
            print(f"    medfool does not reach {best_name}'s success {bar:.3f} within the budget")
    write_results(f"onepixel_{args.dataset}_k{args.pixels}", found, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
