"""Every figure the project draws, with matplotlib's object API on the Agg canvas: no pyplot, no global backend
switch, no figure state kept between calls (safe in loops over many songs and in worker threads).

- ``mel_rgb``: a mel as an RGB array for TensorBoard (training previews);
- ``save_mel_png``: a converted song's mel beside its wav; ``save_mel_pair_png``: source over converted (studio);
- ``save_histogram_png``: a singer's F0 range (``prepare/preprocess_zzz.py``);
- ``save_curves_png``: quality against estimator calls per sampler (``gvc_sampler_study.py``).
PNGs are written atomically (``common.io.atomic_path``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from common.io import atomic_path


def new_figure(figsize: tuple[float, float], rows: int = 1, sharex: bool = False):
    """A ``(Figure, Axes)`` pair on its own Agg canvas (matplotlib imported only when a figure is drawn); with
    ``rows`` > 1 the axes are ``rows`` stacked plots."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, (fig.add_subplot() if rows == 1 else fig.subplots(rows, 1, sharex=sharex))


def save_png(fig, path: str | Path, dpi: float | None = None) -> None:
    """Lay the figure out and write it as a PNG (at ``dpi``, default matplotlib's), atomically."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def _mel_figure(mel: np.ndarray, figsize: tuple[float, float], labels: bool):
    fig, ax = new_figure(figsize)
    im = ax.imshow(mel, aspect="auto", origin="lower", interpolation="none")
    fig.colorbar(im, ax=ax)
    if labels:
        ax.set_xlabel("frame (10 ms)")
        ax.set_ylabel("mel band")
    return fig


def mel_rgb(mel: np.ndarray) -> np.ndarray:
    """A mel ``[n_mels, T]`` (bands up, frames across, with a colour bar) as an RGB image ``[H, W, 3]`` uint8."""
    fig = _mel_figure(mel, (12, 3), labels=False)
    fig.tight_layout()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_mel_png(mel: np.ndarray, path: str | Path) -> None:
    """A mel ``[n_mels, T]`` (100 Hz frames) as a labelled PNG image with a colour bar."""
    save_png(_mel_figure(mel, (12, 4), labels=True), path)


def save_mel_pair_png(source: np.ndarray, converted: np.ndarray, path: str | Path, dpi: float = 80) -> None:
    """Source mel over converted mel ``[n_mels, T]`` each, on one colour scale, as one PNG (the studio's result)."""
    fig, axes = new_figure((10, 5), rows=2, sharex=True)
    lo = min(float(source.min()), float(converted.min()))
    hi = max(float(source.max()), float(converted.max()))
    for ax, mel, title in zip(axes, (source, converted), ("source", "converted")):
        ax.imshow(mel, aspect="auto", origin="lower", interpolation="none", vmin=lo, vmax=hi)
        ax.set_ylabel("mel band")
        ax.set_title(title, fontsize=9)
    axes[1].set_xlabel("frame (10 ms)")
    save_png(fig, path, dpi)


def save_histogram_png(values: np.ndarray, bins: np.ndarray, path: str | Path, xlabel: str, ylabel: str, title: str,
                       log_x: bool = False) -> None:
    """A histogram of ``values`` over ``bins`` (edges) as a PNG; ``log_x`` for a logarithmic value axis."""
    fig, ax = new_figure((7, 3))
    ax.hist(values, bins=bins)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    save_png(fig, path)


def save_curves_png(curves: Mapping[str, Sequence[tuple[float, float]]], path: str | Path, xlabel: str,
                    ylabel: str, log2_x: bool = False) -> None:
    """One marked line per name through its ``(x, y)`` points, with a legend and a light grid, as a PNG."""
    fig, ax = new_figure((7, 4))
    for name, points in curves.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    if log2_x:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(True, alpha=0.3)
    save_png(fig, path)
