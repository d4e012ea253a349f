"""PNG figures of images and latents for `bvae demo`, `bvae eval` and `bvae sample`.

All drawing goes through matplotlib's Agg backend, so figures are written the same on a headless machine.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (imported on first use: only the commands that draw need it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return Path(path)


def image_grid(images: torch.Tensor, nrow: int, pad: int = 1) -> np.ndarray:
    """Tile [N, C, H, W] images in [0, 1] into one array [H', W'] (grey) or [H', W', 3], `nrow` images a row."""
    n, c, h, w = images.shape
    ncol = nrow
    rows = math.ceil(n / ncol)
    grid = np.ones((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), dtype=np.float32)
    arr = images.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = arr[i]
    return grid[..., 0] if c == 1 else grid


def save_grid(images: torch.Tensor, nrow: int, path: str | os.PathLike, title: str | None = None) -> Path:
    """Writes `image_grid(images, nrow)` as one PNG picture, with an optional title."""
    plt = _pyplot()
    grid = image_grid(images, nrow)
    fig, ax = plt.subplots(figsize=(max(2.0, grid.shape[1] / 30), max(1.0, grid.shape[0] / 30) + (0.4 if title else 0)))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def save_image_rows(rows: list[tuple[str, torch.Tensor]], path: str | os.PathLike, title: str = "") -> Path:
    """Writes one labelled row of images per (label, [N, C, H, W] tensor in [0, 1]) as a PNG.

    For side-by-side comparisons (test images over each model's reconstructions), where every row needs its label.
    """
    plt = _pyplot()
    cols = max(t.shape[0] for _, t in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(cols * 0.9, len(rows) * 1.0 + 0.4), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < images.shape[0]:
                img = images[c].detach().float().clamp(0, 1).cpu()
                if img.shape[0] == 1:
                    ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(img.permute(1, 2, 0).numpy())
        axes[r][0].set_title(label, fontsize=8, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def save_tsne(mu: torch.Tensor, labels: torch.Tensor, path: str | os.PathLike, n: int = 2000, seed: int = 0) -> Path:
    """Writes a t-SNE of (a random subsample of at most `n`) latent means, coloured by class, as a PNG."""
    from sklearn.manifold import TSNE

    plt = _pyplot()
    idx = np.random.default_rng(seed).permutation(len(mu))[: min(n, len(mu))]
    z = mu[idx].double().numpy()
    y = labels[idx].numpy()
    perplexity = min(30.0, (len(idx) - 1) / 3)
    emb = TSNE(n_components=2, init="pca", perplexity=perplexity, max_iter=500, random_state=seed).fit_transform(z)
    fig, ax = plt.subplots(figsize=(6, 6))
    sc = ax.scatter(emb[:, 0], emb[:, 1], c=y, cmap="tab10", s=4)
    ax.legend(*sc.legend_elements(), title="class", fontsize=7, loc="best", markerscale=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of {len(idx)} test latent means")
    return _save(fig, path)


__all__ = ["image_grid", "save_grid", "save_image_rows", "save_tsne"]
