"""Example grids: original | adversarial | amplified perturbation, with labels and confidences."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from medfool.utils.io import atomic_open
from medfool.vocab import MULTI_LABEL, Task

__all__ = ["amplify", "class_grid", "example_grid", "result_grid"]

if TYPE_CHECKING:
    from medfool.attacks.base import AttackResult
    from medfool.data.dataset import DatasetInfo


def _to_pil(t: torch.Tensor, scale: int) -> Image.Image:
    arr = (t.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    img = Image.fromarray(arr, "RGB")
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def amplify(delta: torch.Tensor) -> torch.Tensor:
    """Map a perturbation to [0, 1] around mid-grey, scaled by its own largest value."""
    m = delta.abs().amax().clamp_min(1e-12)
    return 0.5 + 0.5 * delta / m


def example_grid(x: torch.Tensor, x_adv: torch.Tensor, captions: Sequence[tuple[str, str, str]], path: Path,
                 *, title: str = "", scale: int | None = None) -> Path:
    """Write a PNG with one row per image. ``captions``: (original, adversarial, perturbation) text."""
    n, _, h, _ = x.shape
    scale = scale or max(1, 112 // h)
    tile = h * scale
    font = ImageFont.load_default()
    text_h, pad, head = 30, 6, 22 if title else 0
    width = 3 * (tile + pad) + pad
    canvas = Image.new("RGB", (max(width, 3 * 190), head + n * (tile + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 4), title, fill="black", font=font)
    col_w = max(tile + pad, 190)
    for i in range(n):
        top = head + pad + i * (tile + text_h + pad)
        tiles = (x[i], x_adv[i], amplify(x_adv[i] - x[i]))
        for j, (img, text) in enumerate(zip(tiles, captions[i], strict=True)):
            left = pad + j * col_w
            canvas.paste(_to_pil(img, scale), (left, top))
            for k, line in enumerate(text.split("\n")[:2]):
                draw.text((left, top + tile + 2 + 13 * k), line[:34], fill="black", font=font)
    with atomic_open(path) as handle:
        canvas.save(handle, format="PNG")
    return path


def class_grid(path: Path, columns: Sequence[torch.Tensor], captions: Sequence[tuple[str, ...]], title: str) -> Path:
    """A PNG with one row per class and one image per column (each column (K, C, H, W)), each
    image captioned (e.g. fooling images with the model's confidence)."""
    n, _, h, _ = columns[0].shape
    scale = max(1, 112 // h)
    tile, pad, text_h, head = h * scale, 6, 16, 22
    col_w = max(tile + pad, 150)
    canvas = Image.new("RGB", (pad + len(columns) * col_w, head + n * (tile + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((pad, 4), title, fill="black", font=font)
    for i in range(n):
        top = head + pad + i * (tile + text_h + pad)
        for j, col in enumerate(columns):
            canvas.paste(_to_pil(col[i], scale), (pad + j * col_w, top))
            draw.text((pad + j * col_w, top + tile + 2), captions[i][j][:30], fill="black", font=font)
    with atomic_open(path) as handle:
        canvas.save(handle, format="PNG")
    return path


def result_grid(path: Path, info: DatasetInfo, task: Task, x: torch.Tensor, y: torch.Tensor, result: AttackResult,
                order: torch.Tensor, p_clean: torch.Tensor | None, p_adv: torch.Tensor | None, title: str) -> None:
    """Example grid of the images at ``order``: original | adversarial | amplified difference,
    captioned with labels, the model's confidences (``p_clean``, ``p_adv``: (len(order), K),
    computed by the caller; None for a served model, which is asked nothing beyond the attack's
    own queries) and the perturbation's size."""
    names = [n if len(n) <= 22 else n[:20] + ".." for n in info.class_names]  # keep the confidence visible
    caps = []
    for j, i in enumerate(order.tolist()):
        size = f"L0 {int(result.l0[i])} px, L2 {float(result.l2[i]):.3f}\nLinf {float(result.linf[i]) * 255:.1f}/255"
        if task == MULTI_LABEL:
            caps.append(("original", "adversarial", size))
            continue
        cp, ap = int(result.clean_pred[i]), int(result.adv_pred[i])
        c_conf = "" if p_clean is None else f" {float(p_clean[j, cp]):.2f}"
        a_conf = "" if p_adv is None else f" {float(p_adv[j, ap]):.2f}"
        caps.append((f"true {names[int(y[i])]}\npred {names[cp]}{c_conf}",
                     f"adv {names[ap]}{a_conf}\n{'FOOLED' if bool(result.success[i]) else 'held'}", size))
    example_grid(x[order].cpu(), result.x_adv[order].cpu(), caps, path, title=title)
