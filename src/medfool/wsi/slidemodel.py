"""A trained slide model on disk: the tile model it reads (a path), the aggregator, the
operating threshold chosen on training slides, and for attention MIL the head's weights
(safetensors, never pickle).

``OUT/slide_model.json`` holds the description, ``OUT/attention.safetensors`` the head."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from medfool.errors import CheckpointError
from medfool.utils.io import atomic_write_json, read_json_object
from medfool.wsi.aggregate import AGGREGATORS, Aggregator, AttentionMIL

__all__ = ["SLIDE_MODEL", "SlideModelSpec", "is_slide_model", "load_slide_model", "save_slide_model",
           "tile_model_path"]

SLIDE_MODEL = "slide_model.json"


@dataclass(frozen=True)
class SlideModelSpec:
    tile_model: str
    aggregator: Aggregator
    min_tissue: float = 0.5
    dim: int = 0
    hidden: int = 64
    threshold: float = 0.5  # probability of malignancy at which the slide reads malignant


def is_slide_model(path: str | Path) -> bool:
    return (Path(path) / SLIDE_MODEL).is_file()


def save_slide_model(out: Path, spec: SlideModelSpec, mil: AttentionMIL | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if mil is not None:
        tmp = out / "attention.safetensors.part"
        save_file({k: v.detach().contiguous() for k, v in mil.state_dict().items()}, str(tmp))
        tmp.replace(out / "attention.safetensors")
    atomic_write_json(out / SLIDE_MODEL, asdict(spec))


def load_slide_model(folder: str | Path) -> tuple[SlideModelSpec, AttentionMIL | None]:
    path = Path(folder) / SLIDE_MODEL
    data = read_json_object(path, CheckpointError, "slide model description")
    try:
        spec = SlideModelSpec(tile_model=str(data["tile_model"]), aggregator=data["aggregator"],
                              min_tissue=float(data.get("min_tissue", 0.5)), dim=int(data.get("dim", 0)),
                              hidden=int(data.get("hidden", 64)), threshold=float(data.get("threshold", 0.5)))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a slide model description ({exc})") from None
    if not 0.0 <= spec.threshold <= 1.0:
        raise CheckpointError(f"{path}: threshold {spec.threshold} is not a probability")
    if spec.aggregator not in AGGREGATORS:
        raise CheckpointError(f"{path}: unknown aggregator {spec.aggregator!r}")
    if spec.aggregator != "attention":
        return spec, None
    weights = Path(folder) / "attention.safetensors"
    try:
        state = load_file(str(weights))
        mil = AttentionMIL(spec.dim, spec.hidden)
        mil.load_state_dict(state)
    except (OSError, RuntimeError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"{weights}: not the attention head this slide model describes "
                              f"({str(exc).splitlines()[0][:160]})") from None
    return spec, mil.eval()


def tile_model_path(spec: SlideModelSpec, folder: Path) -> str:
    """The tile model, relative paths read from the slide model's folder."""
    p = Path(spec.tile_model)
    return str(p if p.is_absolute() else (folder / p))

