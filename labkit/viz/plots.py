"""Shared matplotlib helpers. Each returns a Figure with a title and labelled axes."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def heatmap(
    values,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    cmap: str = "viridis",
    annotate: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
    ax=None,
    colorbar: bool = True,
) -> Figure:
    """A 2-D matrix as an image with tick labels, a colour bar and optional cell values."""
    m = _np(values)
    if m.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D matrix, got shape {m.shape}; select one head/batch first")
    if ax is None:
        fig, ax = plt.subplots(figsize=(min(10.0, max(3.0, 0.45 * m.shape[1] + 2)),  # capped: big matrices
                                        min(8.0, max(2.5, 0.4 * m.shape[0] + 1.5))))  # stay on screen
    else:
        fig = ax.figure
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    if col_labels is not None:
        ax.set_xticks(range(len(col_labels)), list(col_labels), rotation=60, ha="right")
    if row_labels is not None:
        ax.set_yticks(range(len(row_labels)), list(row_labels))
    if annotate:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                r, g, b, _ = im.cmap(im.norm(m[i, j]))  # dark text on light cells, whatever the colour map
                color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7, color=color)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def attention_heatmap(
    weights,
    query_tokens: Sequence[str] | None = None,
    key_tokens: Sequence[str] | None = None,
    title: str = "Attention weights",
    ax=None,
    annotate: bool = False,
) -> Figure:
    """Attention weights (T_q, T_k) with query tokens as rows and key tokens as columns."""
    w = _np(weights)
    while w.ndim > 2 and w.shape[0] == 1:
        w = w[0]
    if w.ndim != 2:
        raise ValueError(f"attention_heatmap needs (T_q, T_k) weights, got shape {w.shape}; pick one batch item and head")
    key_tokens = key_tokens if key_tokens is not None else query_tokens
    return heatmap(w, query_tokens, key_tokens, title=title, xlabel="key (attended to)",
                   ylabel="query (attending)", cmap="Blues", annotate=annotate, vmin=0.0, vmax=1.0, ax=ax)


def loss_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str = "Loss",
    xlabel: str = "step",
    ylabel: str = "loss",
    logy: bool = False,
    ax=None,
) -> Figure:
    """Several named curves, each given as (steps, values)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    else:
        fig = ax.figure
    for name, (x, y) in curves.items():
        ax.plot(list(x), list(y), label=name, marker="o" if len(x) < 25 else None, markersize=3)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend()
    fig.tight_layout()
    return fig


def image_grid(
    images,
    nrow: int = 8,
    titles: Sequence[str] | None = None,
    title: str = "",
    cmap: str = "gray",
) -> Figure:
    """Images (N, H, W) or (N, C, H, W) in a grid, each optionally titled."""
    imgs = _np(images)
    if imgs.ndim == 4:
        imgs = imgs[:, 0] if imgs.shape[1] == 1 else imgs.transpose(0, 2, 3, 1)
    if imgs.ndim not in (3, 4):
        raise ValueError(f"image_grid needs (N, H, W) or (N, C, H, W) images, got shape {imgs.shape}")
    n = len(imgs)
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrows, ncol, figsize=(1.2 * ncol, 1.3 * nrows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(imgs[i], cmap=cmap)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
