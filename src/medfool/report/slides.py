"""A slide's heat map: its thumbnail with each tile's score over it, as a PNG (runs no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfool.report.plots import save_figure

__all__ = ["slide_heatmap"]


def slide_heatmap(path: Path, thumbnail: np.ndarray, downsample: float, origins: np.ndarray, tile_px: float,
                  scores: np.ndarray, *, title: str, label: str = "tile score",
                  marks: np.ndarray | None = None) -> Path:
    """``thumbnail`` (H, W, 3) uint8 at ``downsample`` from level 0, with tiles at level-0
    ``origins`` (N, 2) of ``tile_px`` level-0 pixels coloured by ``scores`` (N,) in [0, 1];
    ``marks`` (M, 2) level-0 points (changed pixels) drawn as rings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = thumbnail.shape[:2]
    overlay = np.full((h, w), np.nan, dtype=np.float32)
    side = max(1, round(tile_px / downsample))
    for (x, y), s in zip(origins, scores, strict=True):
        c, r = int(x / downsample), int(y / downsample)
        overlay[r:r + side, c:c + side] = s
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    axes[0].imshow(thumbnail)
    axes[0].set_title("slide")
    axes[1].imshow(thumbnail)
    shown = axes[1].imshow(np.ma.masked_invalid(overlay), cmap="inferno", vmin=0, vmax=1, alpha=0.6)
    axes[1].set_title(label)
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    if marks is not None and len(marks):
        for ax in axes:
            ax.scatter(marks[:, 0] / downsample, marks[:, 1] / downsample, s=120, facecolors="none",
                       edgecolors="cyan", linewidths=1.5)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title)
    save_figure(fig, path)
    return path
