"""The architecture table: parameters, input size, CPU milliseconds per image for a forward
pass and for a forward+backward pass (the gradient an attack step needs) at batch 32.

Usage:  python benchmarks/architectures.py [--size 224] [--channels 1] [--batch 32] [--repeats 3]
        [--only densenet121,vit] [--json OUT]

Writes the rows to OUT, by default benchmarks/results/architectures_CxSIZE[_ONLY].json.

Every registered architecture (MONAI's need the monai extra) is built with random weights
for ``channels``-channel images of ``size`` px, wrapped as a medfool model and timed over
``repeats`` batches after one warm-up, best of the repeats, in one process. The peak resident
memory of the whole process is printed at the end (Linux: getrusage).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from medfool.models import architectures, build
from medfool.models.classifier import Classifier, ModelMeta
from medfool.models.zoo import NEEDS_SIZE
from record import slug, write_results  # benchmarks/record.py (the script folder is on sys.path)


def time_it(model: Classifier, x: torch.Tensor, backward: bool, repeats: int) -> float:
    best = float("inf")
    for k in range(repeats + 1):
        start = time.perf_counter()
        if backward:
            xa = x.clone().requires_grad_(True)
            torch.autograd.grad(model(xa)[:, 0].sum(), xa)
        else:
            with torch.no_grad():
                model(x)
        if k:  # the first is a warm-up
            best = min(best, time.perf_counter() - start)
    return best / x.shape[0] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated architectures (default: all but ensemble)")
    parser.add_argument("--json", default=None,
                        help="results file (default: benchmarks/results/architectures_CxSIZE[_ONLY].json)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else [a for a in architectures() if a != "ensemble"]
    torch.manual_seed(0)
    x = torch.rand(args.batch, args.channels, args.size, args.size)
    rows = []
    print(f"{'architecture':16} {'parameters':>12} {'input':>10} {'forward ms/img':>15} {'fwd+bwd ms/img':>15}")
    for name in names:
        kw = {"img_size": args.size} if name in NEEDS_SIZE else {}
        net = build(name, in_channels=args.channels, num_outputs=2, **kw)
        meta = ModelMeta(task="binary", class_names=("a", "b"), input_shape=(args.channels, args.size, args.size),
                         mean=(0.5,) * args.channels, std=(0.25,) * args.channels, num_outputs=2, arch=name,
                         arch_kwargs=kw)
        model = Classifier(net, meta).eval()
        params = sum(p.numel() for p in model.parameters())
        fwd = time_it(model, x, False, args.repeats)
        bwd = time_it(model, x, True, args.repeats)
        rows.append({"arch": name, "parameters": params, "input": list(meta.input_shape),
                     "forward_ms_per_image": fwd, "forward_backward_ms_per_image": bwd, "batch": args.batch,
                     "threads": torch.get_num_threads()})
        print(f"{name:16} {params:>12,} {'x'.join(map(str, meta.input_shape)):>10} {fwd:>15.1f} {bwd:>15.1f}",
              flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process: {peak:,.0f} MiB ({torch.get_num_threads()} threads)")
    name = f"architectures_{args.channels}x{args.size}" + (f"_{slug(args.only)}" if args.only else "")
    write_results(name, {"size": args.size, "channels": args.channels, "batch": args.batch,
                         "repeats": args.repeats, "rows": rows, "peak_rss_mib": peak}, args.json)


if __name__ == "__main__":
    main()
