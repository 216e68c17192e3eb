"""Line charts and image tiles written as PNG files, for curves (size sweeps, security curves)
and small pictures (a patch, a trigger) in command outputs and reports.

matplotlib runs on its non-interactive Agg backend so nothing needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from medfool.utils.io import atomic_open

__all__ = ["heatmap_row", "image_png", "line_chart", "save_figure"]


def save_figure(fig: Any, path: Path) -> None:
    """Lay out, write atomically as PNG, and free the figure (also after an error)."""
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        with atomic_open(path) as handle:
            fig.savefig(handle, format="png")
    finally:
        plt.close(fig)


def line_chart(path: Path, x: Sequence[float], series: Mapping[str, Sequence[float]], *, xlabel: str, ylabel: str,
               title: str = "", percent_x: bool = False, marker_x: float | None = None,
               marker_label: str = "") -> Path:
    """One line per entry of ``series`` over ``x``; y is a rate in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    try:
        xs = [100 * v for v in x] if percent_x else list(x)
        styles = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":")]
        for i, (name, ys) in enumerate(series.items()):
            marker, line = styles[i % len(styles)]
            ax.plot(xs, list(ys), marker=marker, linestyle=line, label=name)
        if marker_x is not None:
            at = 100 * marker_x if percent_x else marker_x
            ax.axvline(at, color="grey", linestyle=":", label=marker_label or None)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if title:
            ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    except BaseException:
        plt.close(fig)
        raise
    save_figure(fig, path)
    return path


def image_png(path: Path, image: torch.Tensor, *, alpha: torch.Tensor | None = None, scale: int = 8) -> Path:
    """Write a (C, H, W) image in [0, 1] as a PNG enlarged ``scale`` times (nearest neighbour);
    ``alpha`` (1, H, W) in [0, 1] becomes the transparency channel (e.g. a circular patch's mask)."""
    arr = (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if alpha is not None:
        a = (alpha.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        img = Image.fromarray(np.concatenate([arr, a], axis=2), "RGBA")
    else:
        img = Image.fromarray(arr, "RGB")
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    with atomic_open(path) as handle:
        img.save(handle, format="PNG")
    return path


def heatmap_row(path: Path, panels: Sequence[tuple[str, torch.Tensor]], *, image: torch.Tensor | None = None,
                title: str = "", marks: Sequence[tuple[int, int]] = (), cmap: str = "magma") -> Path:
    """A row of heatmaps (each (h, w), its own colour scale), optionally preceded by the image
    (C, H, W) they refer to; ``marks`` are (row, col) pixels circled on the image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = len(panels) + (image is not None)
    fig, axes = plt.subplots(1, cols, figsize=(2.3 * cols, 2.6), dpi=110, squeeze=False)
    try:
        ax_iter = iter(axes[0])
        if image is not None:
            ax = next(ax_iter)
            arr = image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            ax.imshow(arr[..., 0] if arr.shape[2] == 1 else arr, cmap="gray" if arr.shape[2] == 1 else None,
                      vmin=0, vmax=1, interpolation="nearest")
            for r, c in marks:
                ax.add_patch(matplotlib.patches.Circle((c, r), 1.2, fill=False, color="cyan", linewidth=1.2))
            ax.set_title("image", fontsize=8)
        for (name, values), ax in zip(panels, ax_iter, strict=False):
            im = ax.imshow(values.detach().float().cpu().numpy(), cmap=cmap, interpolation="nearest")
            ax.set_title(name, fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
        for ax in axes[0]:
            ax.set_xticks([])
            ax.set_yticks([])
        if title:
            fig.suptitle(title, fontsize=9)
    except BaseException:
        plt.close(fig)
        raise
    save_figure(fig, path)
    return path
