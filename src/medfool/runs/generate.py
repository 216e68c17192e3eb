"""``medfool generate train``: a DCGAN on one class of a dataset, its fakes, and how real they
look: FID and a classifier two-sample test in a medfool model's feature space, nearest-neighbour
distances to the training images, each beside the same figure for held-out real images; with a
model, the share of fakes it reads as the class they were made for."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfool.errors import ConfigError
from medfool.generative.dcgan import GanConfig, generate, train_gan
from medfool.generative.realism import frechet_distance, nearest_distances, two_sample_accuracy
from medfool.models import load_classifier
from medfool.models.classifier import Classifier
from medfool.models.features import deep_features
from medfool.runs.common import DataSource, Say, check_writable, to_log
from medfool.utils.device import resolve_device
from medfool.utils.io import atomic_write_json
from medfool.utils.repro import environment
from medfool.vocab import Device

__all__ = ["GenerateJob", "run_generate"]


@dataclass(frozen=True)
class GenerateJob:
    data: DataSource
    model: str
    out: Path
    cls: str | None = None
    n_fakes: int = 500
    epochs: int = 60
    max_minutes: float = 15.0
    seed: int = 0
    device: Device = "auto"


def _probabilities(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """(N, K) class probabilities, one padded forward pass over ``x`` (two columns for a binary
    model with one logit)."""
    with torch.no_grad(), model.padded():
        probs = torch.cat([model.probabilities(x[s:s + 256].to(model.device)).cpu()
                           for s in range(0, x.shape[0], 256)])
    return torch.cat([1 - probs, probs], dim=1) if probs.shape[1] == 1 else probs


def _reads_as(probs: torch.Tensor, cls: int) -> tuple[float, float, float]:
    """(share read as ``cls``, share read as it with confidence >= 0.9, median confidence)."""
    hit = probs.argmax(1) == cls
    conf = probs[:, cls]
    return float(hit.float().mean()), float((hit & (conf >= 0.9)).float().mean()), float(conf.median())


def _malignant(probs: torch.Tensor, critical: list[int]) -> tuple[float, float]:
    """(share read as one of the critical classes, share with their probability >= 0.9)."""
    read = torch.isin(probs.argmax(1), torch.tensor(critical))
    return float(read.float().mean()), float((probs[:, critical].sum(1) >= 0.9).float().mean())


def _realism(model: Classifier, fakes: torch.Tensor, held: torch.Tensor, train: torch.Tensor,
             seed: int) -> dict[str, Any]:
    """Each figure for the fakes and for held-out real images of the class, side by side."""
    gen = torch.Generator().manual_seed(seed)
    ref = train[torch.randperm(train.shape[0], generator=gen)[: max(held.shape[0], 2)]]
    with torch.no_grad():
        f_fake, f_held, f_ref = (deep_features(model, x.to(model.device)).cpu() for x in (fakes, held, ref))
    nn_fake, nn_held = nearest_distances(fakes, train), nearest_distances(held, train)
    return {"fid": frechet_distance(f_fake, f_held), "fid_real_reference": frechet_distance(f_ref, f_held),
            "two_sample": two_sample_accuracy(f_held, f_fake, seed=seed),
            "two_sample_real_reference": two_sample_accuracy(f_held, f_ref, seed=seed),
            "nearest_train_distance": {"fakes_median": float(nn_fake.median()), "fakes_min": float(nn_fake.min()),
                                       "held_out_real_median": float(nn_held.median()),
                                       "held_out_real_min": float(nn_held.min())}}


def _write_outputs(out: Path, fakes: torch.Tensor, held: torch.Tensor, generator: torch.nn.Module, title: str) -> None:
    """OUT/fakes.npz (uint8, N x H x W x C), OUT/fakes.png (held-out real beside generated) and
    OUT/generator.safetensors."""
    from safetensors.torch import save_file

    from medfool.report.grid import class_grid

    out.mkdir(parents=True, exist_ok=True)
    arr = (fakes.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    np.savez_compressed(out / "fakes.npz", images=arr)
    save_file({k: v.contiguous() for k, v in generator.state_dict().items()}, str(out / "generator.safetensors"))
    k = min(8, held.shape[0], fakes.shape[0])
    if k:
        class_grid(out / "fakes.png", [held[:k], fakes[:k]], [("held-out real", "generated")] * k,
                   title=f"{title}: held-out real and generated")


def run_generate(job: GenerateJob, say: Say = to_log) -> dict[str, Any]:
    """Train the DCGAN, write OUT/fakes.npz (uint8, N x H x W x C), OUT/fakes.png, OUT/generator.safetensors
    and OUT/results.json."""
    from tqdm import tqdm

    dataset = job.data.load()
    model, _ = load_classifier(job.model, device=resolve_device(job.device))
    shape = tuple(dataset.split("train").image_shape)
    if tuple(model.meta.input_shape) != shape:
        raise ConfigError(f"{job.model}: takes images of {tuple(model.meta.input_shape)}, the data's are {shape}")
    check_writable(job.out)
    cls = dataset.info.class_index(job.cls) if job.cls is not None else None
    x_tr, y_tr = dataset.split("train").tensors()
    x_te, y_te = dataset.split("test").tensors()
    if cls is not None:
        x_tr, x_te = x_tr[y_tr == cls], x_te[y_te == cls]
    name = dataset.info.class_names[cls] if cls is not None else "all classes"
    say(f"DCGAN on {x_tr.shape[0]:,} {dataset.info.name} training images ({name}); at most {job.epochs} epochs or "
        f"{job.max_minutes:g} minutes")
    cfg = GanConfig(epochs=job.epochs, max_minutes=job.max_minutes, seed=job.seed)
    bar = tqdm(total=job.epochs, desc="DCGAN", unit="epoch")

    def progress(_epoch: int, row: dict[str, float]) -> None:
        bar.update(1)
        bar.set_postfix(d_loss=f"{row['d_loss']:.2f}", g_loss=f"{row['g_loss']:.2f}")

    result = train_gan(x_tr, cfg, progress)
    bar.close()
    fakes = generate(result.generator, job.n_fakes, result.size, seed=job.seed + 1)
    held = x_te[: job.n_fakes]
    record: dict[str, Any] = {"dataset": dataset.info.name, "class": name, "model": job.model,
                              "train_images": int(x_tr.shape[0]), "held_out_images": int(held.shape[0]),
                              "fakes": int(fakes.shape[0]), "epochs_run": result.epochs_run,
                              "train_seconds": result.seconds, "config": asdict(cfg),
                              **_realism(model, fakes, held, x_tr, job.seed)}
    p_fake, p_held = _probabilities(model, fakes), _probabilities(model, held)
    if cls is not None:
        share, sure, conf = _reads_as(p_fake, cls)
        r_share, r_sure, r_conf = _reads_as(p_held, cls)
        record["read_as_class"] = {"fakes": share, "fakes_confidence_0_9": sure, "fakes_median_confidence": conf,
                                   "held_out_real": r_share, "held_out_real_confidence_0_9": r_sure,
                                   "held_out_real_median_confidence": r_conf}
    if model.meta.critical_classes and model.task != "multi-label":
        share, sure = _malignant(p_fake, list(model.meta.critical_classes))
        r_share, r_sure = _malignant(p_held, list(model.meta.critical_classes))
        record["read_as_malignant"] = {"fakes": share, "fakes_confidence_0_9": sure, "held_out_real": r_share,
                                       "held_out_real_confidence_0_9": r_sure}
    _write_outputs(job.out, fakes, held, result.generator, f"{dataset.info.name} ({name})")
    record["environment"] = environment()
    atomic_write_json(job.out / "results.json", record)
    say(f"FID {record['fid']:.1f} (real against real: {record['fid_real_reference']:.1f}); two-sample accuracy "
        f"{record['two_sample']:.1%} (real against real: {record['two_sample_real_reference']:.1%}); "
        f"wrote {job.out}/results.json")
    return record
