"""The audit at clinical resolution: a MONAI DenseNet-121 or a HuggingFace ViT at 224 px on a
folder of DICOM CT slices, timed, with the peak memory of the process and the report checked
in headless Chromium (where Playwright and Chromium are installed).

Usage:  python benchmarks/clinical_audit.py [--model densenet121|hf-vit] [--n 16] [--size 224]
        [--config small|default] [--out runs/clinical-audit] [--json OUT]

The data are phantom CT slices written with ``medfool.data.dicom.write_ct_phantoms`` (soft tissue
at 40 HU with noise, a +60 HU disc in the 'lesion' class), read through the 40/400 HU window.
The networks have seeded random weights (nothing is downloaded): the audit's cost depends on
the network and the budgets, not on what it learnt. ``--config small`` is clinical_audit.toml
beside this file (every stage that scales with the image, small budgets; the test of the
clinical audit uses it too);
``default`` is ``medfool audit``'s own configuration (about 6 hours for the DenseNet-121 on two
CPU cores: run ``medfool audit --estimate`` with the same arguments first).
The figures go to OUT, by default benchmarks/results/clinical_audit_MODEL_SIZEpx_CONFIG.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

import torch

from medfool.cli.main import main as medfool
from medfool.data.dicom import write_ct_phantoms
from medfool.models import build, save_checkpoint
from medfool.models.classifier import Classifier, ModelMeta
from record import write_results  # benchmarks/record.py (the script folder is on sys.path)

SMALL = Path(__file__).with_name("clinical_audit.toml")


def densenet(path: Path, size: int) -> Path:
    torch.manual_seed(0)
    meta = ModelMeta(task="binary", class_names=("lesion", "normal"), input_shape=(1, size, size), mean=(0.3,),
                     std=(0.3,), num_outputs=2, critical_classes=(0,), arch="densenet121")
    return save_checkpoint(Classifier(build("densenet121", in_channels=1, num_outputs=2), meta), path)


def hf_vit(folder: Path, size: int) -> Path:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=size, patch_size=16, hidden_size=192, num_hidden_layers=6,
                                 num_attention_heads=3, intermediate_size=768, num_labels=2,
                                 id2label={0: "lesion", 1: "normal"}, label2id={"lesion": 0, "normal": 1})
    transformers.ViTForImageClassification(cfg).save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"height": size, "width": size}, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    return folder


def check_in_chromium(report: Path) -> str:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "not checked (no playwright)"
    browser_path = shutil.which("chromium")
    if not browser_path:
        return "not checked (no chromium)"
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--disable-quic"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=flags)
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(report.resolve().as_uri(), wait_until="load")
            headings = page.evaluate("Array.from(document.querySelectorAll('h2')).length")
            broken = page.evaluate("Array.from(document.images).filter(i => !i.naturalWidth).length")
        finally:
            browser.close()
    return f"{headings} sections, {broken} broken images, {len(problems)} page errors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="densenet121", choices=("densenet121", "hf-vit"))
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--config", default="small", choices=("small", "default"))
    parser.add_argument("--out", default="runs/clinical-audit")
    parser.add_argument("--json", default=None,
                        help="results file (default: benchmarks/results/clinical_audit_MODEL_SIZEpx_CONFIG.json)")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    data = out / "dicom"
    write_ct_phantoms(data, n=max(40, 5 * args.n // 2), size=args.size)  # the test split (20 %) holds n images
    model = densenet(out / "densenet121.safetensors", args.size) if args.model == "densenet121" else \
        hf_vit(out / "vit", args.size)
    config = ["--config", str(SMALL)] if args.config == "small" else []
    start = time.perf_counter()
    code = medfool(["audit", "-m", str(model), "-d", str(data), "--window", "40,400", *config,
                    "--n", str(args.n), "--out", str(out / "audit")])
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = check_in_chromium(out / "audit" / "report.html")
    print(f"{args.model} at {args.size} px, {args.n} images, config {args.config}: exit {code}, {wall:.0f} s, "
          f"peak resident memory {peak:,.0f} MiB, {torch.get_num_threads()} threads; report: {report}")
    write_results(f"clinical_audit_{args.model}_{args.size}px_{args.config}",
                  {"model": args.model, "size_px": args.size, "n": args.n, "config": args.config, "exit_code": code,
                   "wall_s": wall, "peak_rss_mib": peak, "threads": torch.get_num_threads(),
                   "report_check": report}, args.json)


if __name__ == "__main__":
    main()
