"""Every figure of the repo, as pure functions: data in, a ``matplotlib.figure.Figure`` out.

Latent space and interpolation: the latent graph with its paths (Fig. 3, 5), decoded paths as
image strips (Fig. 4, 8) or feature trajectories (Fig. 6), latents coloured by a factor (Fig. 2,
16) or a label (Fig. 17), and Fig. 2's posterior/prior panels. Training: beta and C_t against the
step (Fig. 2, right; Table 1's settings), Table 2's validation curves and paired differences,
Figs. 2 and 11-15 side by side. Reports: the smoothness per output dimension (Fig. 7), rate vs
distortion (Fig. 19), the inner latent's KL per dimension (Fig. 20), and image grids of
reconstructions and samples.

No Trainer, no files read: the callbacks, reports and entry points gather the data and decide
where a figure goes, then write it with ``save_figure(fig, path)`` (which closes it). Nothing
here selects a backend (the entry points select Agg; a notebook keeps its own).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.decomposition import PCA

if TYPE_CHECKING:
    import torch


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` (the format from its suffix; parent folders created), close
    it, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# --- latent space and interpolation (Fig. 2-6, 16, 17) -----------------------------------------
def _to_2d(nodes: np.ndarray, *others: np.ndarray) -> tuple[list[np.ndarray], str]:
    """Project ``nodes: (N, d)`` and ``others: (M, d)`` to 2-d; PCA fitted on ``nodes`` if d > 2."""
    d = nodes.shape[1]
    if d == 2:
        return [nodes, *others], ""
    if d == 1:
        return [np.hstack([a, np.zeros_like(a)]) for a in (nodes, *others)], " (1-d latent)"
    pca = PCA(n_components=2).fit(nodes)
    explained = 100 * pca.explained_variance_ratio_.sum()
    note = f" (PCA of the {d}-d latent, {explained:.0f}% of the variance)"
    return [pca.transform(a) for a in (nodes, *others)], note


def _latent_axis_labels(ax: plt.Axes, note: str) -> None:
    """Name a latent panel's axes: z_1, z_2 for a 2-d latent, the principal components when
    ``_to_2d`` projected it (its ``note``), z_1 alone for a 1-d latent."""
    pca = note.startswith(" (PCA")
    ax.set_xlabel("PC 1" if pca else "$z_1$")
    ax.set_ylabel("PC 2" if pca else "" if note else "$z_2$")


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points (a
    character is about 0.6 em wide), so a long title neither runs into the next panel nor off
    the figure."""
    return textwrap.fill(text, max(12, int(72 * width_in / (0.6 * fontsize))))


def _set_title(ax: plt.Axes, text: str, fontsize: float = 9, share: float = 0.85) -> None:
    """The axes' title, wrapped to ``share`` of the width of its grid cell."""
    fig = cast(Figure, ax.figure)
    spec = ax.get_subplotspec()
    n_cols = spec.get_gridspec().ncols if spec is not None else 1
    width = fig.get_figwidth() * (spec.colspan.stop - spec.colspan.start if spec else 1) / n_cols
    ax.set_title(_wrap(text, share * width, fontsize), fontsize=fontsize)


PATH_COLOURS = ("black", "tab:orange", "red", "maroon")  # Fig. 5


def plot_graph_path(
    nodes: np.ndarray,
    graph: nx.Graph,
    path: np.ndarray | list[np.ndarray],
    title: str = "Graph-based interpolation",
    ax: plt.Axes | None = None,
    max_edges: int | None = 50_000,
    seed: int = 0,
) -> Figure:
    """Latent graph with its interpolation path(s) (Fig. 3, 5).

    Args:
        nodes: ``(N, d)`` the graph's nodes (node ``i`` is row ``i``).
        graph: ``interpolation.build_graph(nodes, k)``; edges drawn in bluescale by weight
            (short edges dark, long edges light).
        path: ``(P, d)`` latents along a path, or a list of such paths; drawn in Fig. 5's
            colours (black, orange, red, maroon, then repeating), a single path in red.
        title: the axes' title; a PCA note is appended when ``d > 2``.
        ax: draw into this axes instead of a new figure.
        max_edges: draw at most this many edges (a random subset, ``seed``), ``None`` for all.
    """
    nodes = np.asarray(nodes, dtype=np.float64)
    paths = [path] if isinstance(path, np.ndarray) and path.ndim == 2 else list(path)
    paths = [np.asarray(p, dtype=np.float64) for p in paths]
    for p in paths:
        if p.ndim != 2 or p.shape[1] != nodes.shape[1]:
            raise ValueError(f"path must be (P, {nodes.shape[1]}), got shape {p.shape}")
    (nodes_2d, *paths_2d), note = _to_2d(nodes, *paths)

    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    else:
        fig = cast(Figure, ax.figure)  # the caller's axes belong to a Figure
    edges = np.array([(u, v) for u, v in graph.edges()], dtype=np.int64).reshape(-1, 2)
    weights = np.array([w for _, _, w in graph.edges(data="weight", default=1.0)])
    if max_edges is not None and len(edges) > max_edges:
        keep = np.random.default_rng(seed).choice(len(edges), max_edges, replace=False)
        edges, weights = edges[keep], weights[keep]
    if len(edges):
        lines = LineCollection(list(nodes_2d[edges]), cmap="Blues_r", linewidths=0.4, zorder=1)
        lines.set_array(weights)
        ax.add_collection(lines)
        fig.colorbar(lines, ax=ax, fraction=0.046, pad=0.04, label="edge weight")
    ax.scatter(nodes_2d[:, 0], nodes_2d[:, 1], s=2, c="0.3", zorder=2)
    colours = PATH_COLOURS if len(paths_2d) > 1 else ("red",)
    for k, p in enumerate(paths_2d):
        colour = colours[k % len(colours)]
        ax.plot(*p.T, "-", color=colour, lw=1.8, zorder=3)
        ax.plot(*p[[0, -1]].T, "o", color=colour, ms=5, zorder=4)
    _set_title(ax, title + note, share=0.7)  # the colour bar takes the rest
    _latent_axis_labels(ax, note)
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    return fig


def plot_image_strip(
    images: np.ndarray,
    image_shape: tuple[int, ...] | None = None,
    title: str | None = None,
    max_images: int | None = None,
    cmap: str = "gray",
) -> Figure:
    """A row of decoded images along an interpolation (Fig. 4, 8).

    Args:
        images: ``(P, H, W)``, or ``(P, D)`` with ``image_shape = (H, W)``.
        max_images: show at most this many, evenly spaced along the path, ends included.
    """
    images = np.asarray(images, dtype=np.float64)
    if image_shape is not None:
        images = images.reshape(len(images), *image_shape)
    if images.ndim != 3:
        raise ValueError(
            f"images must be (P, H, W), or (P, D) with image_shape=(H, W); got {images.shape}"
        )
    if max_images is not None and len(images) > max_images:
        images = images[np.linspace(0, len(images) - 1, max_images).round().astype(int)]
    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(0.8 * n, 1.0 if title is None else 1.2), squeeze=False)
    vmin, vmax = min(0.0, float(images.min())), max(1.0, float(images.max()))
    for ax, image in zip(axes[0], images, strict=True):
        ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_xticks([])
        ax.set_yticks([])
    top = 0.98
    if title is not None:
        title = _wrap(title, 0.95 * fig.get_figwidth(), 9)
        lines = title.count("\n") + 1
        fig.set_figheight(fig.get_figheight() + 0.18 * (lines - 1))
        top = 1 - (0.05 + 0.17 * lines) / fig.get_figheight()
        fig.suptitle(title, fontsize=9, y=0.99, va="top")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=top, wspace=0.05)
    return fig


def plot_trajectories(decoded: np.ndarray, title: str = "") -> Figure:
    """Each of the D features of ``decoded: (P, D)`` along the path (non-image data, Fig. 6)."""
    fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
    colours = plt.get_cmap("viridis")(np.linspace(0, 1, decoded.shape[1]))
    for d in range(decoded.shape[1]):
        ax.plot(decoded[:, d], color=colours[d], lw=0.8)
    ax.set_xlabel("step along the path")
    ax.set_ylabel("feature value (one line per feature)")
    _set_title(ax, title, share=0.95)
    return fig


def plot_latents(
    latents: np.ndarray,
    values: np.ndarray,
    title: str = "Latent representation",
    cyclic: bool = True,
    colour_label: str | None = None,
) -> Figure:
    """Latents coloured by a factor (Fig. 2, 16), e.g. the pendulum's joint angle.

    Args:
        latents: ``(N, d)``, projected with PCA when ``d > 2``.
        values: ``(N,)`` the colour; ``cyclic=True`` uses a cyclic colour map (angles).
        colour_label: the colour bar's label; default ``"angle (rad)"`` when ``cyclic``, else
            ``"value"``.
    """
    latents = np.asarray(latents, dtype=np.float64)
    (latents_2d,), note = _to_2d(latents)
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    points = ax.scatter(
        latents_2d[:, 0],
        latents_2d[:, 1],
        s=3,
        c=np.asarray(values),
        cmap="twilight" if cyclic else "viridis",
    )
    label = colour_label or ("angle (rad)" if cyclic else "value")
    fig.colorbar(points, ax=ax, fraction=0.046, pad=0.04, label=label)
    _set_title(ax, title + note, share=0.7)
    _latent_axis_labels(ax, note)
    ax.set_aspect("equal", adjustable="datalim")
    return fig


def _shared_limits(*points: np.ndarray, pad: float = 0.1) -> tuple[tuple[float, float], ...]:
    """One square (x, y) window holding every ``(N, 2)`` point set, padded by ``pad`` of its width.

    Sets of more than 200 points are clipped to their 0.5-99.5% quantiles, so a few far prior
    samples cannot shrink the data to a dot."""
    lo, hi = [], []
    for p in points:
        if len(p) == 0:
            continue
        q = (0.5, 99.5) if len(p) > 200 else (0.0, 100.0)
        lo.append(np.nanpercentile(p, q[0], axis=0))
        hi.append(np.nanpercentile(p, q[1], axis=0))
    low, high = np.min(lo, axis=0), np.max(hi, axis=0)
    centre, half = (low + high) / 2, max(float(np.max(high - low)) / 2, 1e-6) * (1 + pad)
    return tuple((float(c - half), float(c + half)) for c in centre)


def _share_window(axes: Sequence[plt.Axes], *points: np.ndarray) -> None:
    """The same square window (``_shared_limits`` of ``points``) on every panel of ``axes``, so
    a posterior panel and its prior panel are read on one scale."""
    x_lim, y_lim = _shared_limits(*points)
    for ax in axes:
        ax.set_xlim(*x_lim)
        ax.set_ylim(*y_lim)
        ax.set_aspect("equal", adjustable="box")


def _label_panels(fig: Any, axes: Any, names: Any, heading: str | None, note: Any) -> None:
    """Each latent panel's title and z1/z2 (or PC) labels, and the figure's wrapped heading."""
    for ax, name in zip(axes, names, strict=True):
        _set_title(ax, name, share=0.75)
        _latent_axis_labels(ax, note)
    if heading:
        fig.suptitle(_wrap(heading, 0.95 * fig.get_figwidth(), 10), fontsize=10)


def _heading(title: str, note: str, fitted_on: str) -> str:
    """A figure's suptitle: ``title`` and, once for all panels, what ``_to_2d`` did."""
    note = note.strip(" ()")
    if note.startswith("PCA"):
        note = f"axes: {note} (fitted on the {fitted_on})"
    return "; ".join(part for part in (title, note) if part)


def _colour_values(
    values: np.ndarray, cyclic: bool, label: str | None = None
) -> tuple[np.ndarray, str, str]:
    """Colours, colour map and colour-bar label of ``values: (N,)``: angles (floats) on a cyclic
    map, class labels (integers) on a qualitative one; ``label`` overrides the float label."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.integer):
        n = len(np.unique(values))
        return values, "tab10" if n <= 10 else "tab20" if n <= 20 else "viridis", "label"
    default = "joint angle (rad)" if cyclic else "value"
    return values, "twilight" if cyclic else "viridis", label or default


def plot_posterior_and_prior(
    means: np.ndarray,
    stds: np.ndarray,
    angles: np.ndarray,
    prior_samples: np.ndarray,
    title: str = "",
    cyclic: bool = True,
    colour_label: str | None = None,
) -> Figure:
    """Fig. 2 of the paper in one row: posterior means coloured by the angle, the same means
    coloured (viridis) by each point's posterior std (mean over latent dims; its spread across
    points is the "variance of the standard deviation" of Fig. 2), and samples of the prior
    (blue) with the posterior means drawn over them (dark grey).

    All three panels share one window (the union of means and prior samples), so the last one
    shows directly whether the prior covers the encoded data (the pendulum's ring) or sits
    beside it. ``means, stds: (N, d)``, ``angles: (N,)`` (floats: an angle, cyclic colours; or
    integer class labels), ``prior_samples: (M, d)``; PCA fitted on the means when d > 2.
    ``colour_label`` names the float colour bar (default ``"joint angle (rad)"``).
    """
    (m2, p2), note = _to_2d(np.asarray(means, np.float64), np.asarray(prior_samples, np.float64))
    fig, axes = plt.subplots(
        1, 3, figsize=(12, 4.2), sharex=True, sharey=True, layout="constrained"
    )
    colours, cmap, label = _colour_values(angles, cyclic, colour_label)
    pts = axes[0].scatter(*m2.T, s=3, c=colours, cmap=cmap)
    fig.colorbar(pts, ax=axes[0], fraction=0.046, pad=0.04, label=label)
    std = np.asarray(stds, np.float64).mean(axis=1)
    by_std = axes[1].scatter(*m2.T, s=3, c=std, cmap="viridis")  # visible on white at both ends
    label = "posterior std (mean over latent dims)"
    fig.colorbar(by_std, ax=axes[1], fraction=0.046, pad=0.04, label=label)
    axes[2].scatter(*p2.T, s=2, c="tab:blue", alpha=0.4, label="z ~ p(z)")
    axes[2].scatter(*m2.T, s=1, c="0.15", alpha=0.5, label="q(z|x) means")
    axes[2].legend(fontsize=7, loc="upper right", markerscale=3)
    _share_window(axes, m2, p2)
    names = (
        "q(z|x) means",
        f"q(z|x) std (var. over points {std.var():.2g})",
        "prior samples and the q(z|x) means",
    )
    _label_panels(fig, axes, names, _heading(title, note, "means"), note)
    return fig


def is_discrete(labels: np.ndarray | None) -> bool:
    """Whether ``labels: (N,)`` are classes (integers or booleans, at most 20 values): drawn one
    colour and legend entry per class, and used to pick same-class interpolation pairs."""
    return labels is not None and labels.dtype.kind in "iub" and len(np.unique(labels)) <= 20


def plot_latents_by_label(
    means: np.ndarray,
    labels: np.ndarray | None,
    prior: np.ndarray,
    names: list[str] | None = None,
    title: str = "",
    colour_label: str | None = None,
) -> Figure:
    """Fig. 17: posterior means coloured by label (left) and prior samples (right), both
    ``(N, d)`` / ``(M, d)``, projected with PCA (fitted on the prior samples) when d > 2, in
    one window so the two panels are read on one scale.

    ``labels: (N,)`` classes (``names[label]`` in the legend) or floats (a cyclic colour map,
    its colour bar named ``colour_label``, default ``"angle (rad)"``), or None (one colour)."""
    (p2, m2), note = _to_2d(prior, means)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.8), sharex=True, sharey=True,
                             layout="constrained")  # fmt: skip
    if labels is None:
        axes[0].scatter(*m2.T, s=3, c="tab:blue")
    elif is_discrete(labels):
        for i, c in enumerate(np.unique(labels)):
            name = names[int(c)] if names is not None else str(c)
            sel = labels == c
            axes[0].scatter(*m2[sel].T, s=3, color=plt.get_cmap("tab10")(i % 10), label=name)
        axes[0].legend(fontsize=7, markerscale=3, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        pts = axes[0].scatter(*m2.T, s=3, c=labels, cmap="twilight")
        label = colour_label or "angle (rad)"
        fig.colorbar(pts, ax=axes[0], fraction=0.046, pad=0.04, label=label)
    axes[1].scatter(*p2.T, s=2, c="0.3", alpha=0.5)
    _share_window(axes, m2, p2)
    panels = ("approximate posterior q(z|x): means", "prior p(z): samples")
    _label_panels(fig, axes, panels, _heading(title, note, "prior samples"), note)
    return fig


def plot_snapshot_grid(
    steps: Sequence[int], columns: Mapping[str, Sequence[Mapping[str, np.ndarray]]]
) -> Figure:
    """Figs. 2, 11-15 side by side: a column per setting (``columns``: its title -> one snapshot
    per step of ``steps``), per step a row of posterior means coloured by the angle and a row of
    prior samples, on the same axes within a cell pair (z_1 across, z_2 up; no ticks: each pair
    has its own window).

    A snapshot holds ``means: (N, 2)``, ``prior: (M, 2)`` and ``angles: (N,)`` (the arrays of
    ``PendulumFigures``' ``latents_step<k>.npz``)."""
    height = 2.0 * 2 * len(steps) + 0.8
    fig, axes = plt.subplots(
        2 * len(steps),
        len(columns),
        figsize=(2.1 * len(columns) + 0.4, height),
        squeeze=False,
        layout="constrained",
    )
    angle = Normalize(0, 2 * np.pi)
    for col, (setting, snapshots) in enumerate(columns.items()):
        for k, (step, data) in enumerate(zip(steps, snapshots, strict=True)):
            means, prior, angles = data["means"], data["prior"], data["angles"]
            top, bottom = axes[2 * k, col], axes[2 * k + 1, col]
            top.scatter(*means.T, c=angles, cmap="hsv", norm=angle, s=1.5)
            bottom.scatter(*prior.T, s=1.0, c="0.2", alpha=0.5)
            both = np.concatenate([means, np.clip(prior, *np.percentile(prior, [1, 99], 0))])
            lo, hi = both.min(0), both.max(0)
            pad = 0.05 * (hi - lo).max() + 1e-6
            for ax in (top, bottom):
                ax.set_xlim(lo[0] - pad, hi[0] + pad)
                ax.set_ylim(lo[1] - pad, hi[1] + pad)
                ax.set_xticks([])
                ax.set_yticks([])
            if k == 0:
                _set_title(top, setting, fontsize=7, share=0.95)
            if k == len(steps) - 1:
                bottom.set_xlabel("$z_1$", fontsize=7)
            if col == 0:
                top.set_ylabel(f"step {step}\nq(z|x) means\n$z_2$", fontsize=7)
                bottom.set_ylabel(f"step {step}\nprior samples\n$z_2$", fontsize=7)
    bar: dict[str, Any] = {
        "location": "bottom",
        "shrink": 0.7,
        "fraction": 0.3 / height,
        "pad": 0.1 / height,
    }
    label = "joint angle (rad) of the q(z|x) means"
    fig.colorbar(ScalarMappable(angle, "hsv"), ax=axes, label=label, **bar)
    return fig


# --- training (Fig. 2 right, Tables 1 and 2) ----------------------------------------------------
def plot_beta_trace(
    steps: np.ndarray,
    betas: np.ndarray,
    c_hats: np.ndarray,
    kappa_sq: float | None = None,
    switch_step: int | None = None,
    title: str = "",
) -> Figure:
    """beta and the running constraint C_t of one run against the step (Fig. 2, right), log
    scales: ``plot_beta_traces`` with a single run."""
    return plot_beta_traces({"": (steps, betas, c_hats)}, kappa_sq, {"": switch_step}, title)


def plot_beta_traces(
    traces: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    kappa_sq: float | None = None,
    switch_steps: Mapping[str, int | None] | None = None,
    title: str = "",
    sigmas: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Figure:
    """beta (top) and the running constraint C_t (eq. 11) against the step, log scales; with
    ``sigmas`` (run label -> ``(steps, sigma)``, a learned likelihood sigma) a third panel: the
    other half of the effective reconstruction weight 1 / (2 sigma^2).

    Args:
        traces: run label -> ``(steps (T,), betas (T,), C_t (T,))``; with several runs, one
            colour and legend entry each (e.g. Table 1's settings).
        kappa_sq: the bound kappa^2, dashed.
        switch_steps: run label -> the step at which REWO (Alg. 1) left its initial phase,
            dotted on both axes (``None``: no switch, or no phases).
    """
    single = len(traces) == 1
    sigmas = {k: v for k, v in (sigmas or {}).items() if len(v[0])}
    rows = 3 if sigmas else 2
    fig, axes = plt.subplots(
        rows,
        1,
        figsize=(6, 2.5 * rows) if single else (7, 3 * rows),
        sharex=True,
        layout="constrained",
    )
    ax_b, ax_c = axes[0], axes[1]
    colours = {}
    for label, (steps, betas, c_hats) in traces.items():
        (line,) = ax_b.plot(steps, np.maximum(betas, 1e-12), lw=1, label=label)
        colours[label] = "tab:green" if single else line.get_color()
        ax_c.plot(steps, c_hats, lw=1, color=line.get_color(), label="C_t" if single else None)
    if kappa_sq is not None:
        ax_c.axhline(kappa_sq, color="tab:red", ls="--", lw=1, label="kappa^2")
    if sigmas:
        ax_s = axes[2]
        for label, (steps, sigma) in sigmas.items():
            ax_s.plot(steps, sigma, lw=1, color=colours.get(label))
        ax_s.set_yscale("log")
        ax_s.set_ylabel("likelihood sigma")
        ax_s.set_xlabel("step")
    for label, switch in (switch_steps or {}).items():
        if switch is None:
            continue
        for ax in axes:
            ax.axvline(switch, color=colours.get(label, "tab:green"), ls=":", lw=1.5)
        if single:
            ax_c.plot(
                [], [], color="tab:green", ls=":", lw=1.5, label=f"main phase (step {switch})"
            )
    if title:
        ax_b.set_title(title, fontsize=9)
    ax_b.set_yscale("log")
    ax_b.set_ylabel("beta")
    ax_c.set_yscale("log")
    ax_c.set_ylabel("C_t")
    if not sigmas:
        ax_c.set_xlabel("step")
    if not single:
        ax_b.legend(fontsize=7)
    if ax_c.get_legend_handles_labels()[0]:
        ax_c.legend(fontsize=8)
    return fig


def plot_training_curves(
    curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], title: str = ""
) -> Figure:
    """Validation bound (beta = 1) and beta against the step, one line per run (Table 2's rows).

    ``curves``: run label -> ``{"val_loss": (steps, values), "beta": ..., "train_prior": ...}``
    (each optional); REWO's switch to the main phase (``train_prior`` turning 1) is dotted."""
    fig, (ax_v, ax_b) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    empty = (np.zeros(0), np.zeros(0))
    finite: list[float] = []
    for label, curve in curves.items():
        steps, loss = curve.get("val_loss", empty)
        finite += [float(v) for v in loss if np.isfinite(v)]
        (line,) = ax_v.plot(steps, loss, lw=1.2, marker=".", ms=3, label=label)
        beta_steps, beta = curve.get("beta", empty)
        if len(beta_steps):
            ax_b.plot(beta_steps, np.maximum(beta, 1e-12), lw=1, label=label,
                      color=line.get_color())  # fmt: skip
        phase_steps, phase = curve.get("train_prior", empty)
        on = np.flatnonzero(phase > 0.5)
        if len(on) and on[0] > 0:
            ax_b.axvline(phase_steps[on[0]], color=line.get_color(), ls=":", lw=0.8)
    if finite:  # the first validations of REWO (beta ~ 1e-4) are far above the rest
        ax_v.set_ylim(min(finite) - 2, float(np.percentile(finite, 80)) + 5)
    ax_v.set(xlabel="step", ylabel="nats", title="validation bound at β = 1 (−ELBO or −IW bound)")
    ax_b.set(yscale="log", xlabel="step", ylabel="β", title="β (dotted: REWO's phase switch)")
    for ax in (ax_v, ax_b):
        if ax.get_legend_handles_labels()[1]:  # runs without a beta trace: no empty legend
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(_wrap(title, 0.95 * fig.get_figwidth(), 9), fontsize=9)
    return fig


def plot_paired_differences(
    differences: Mapping[str, Sequence[tuple[str, float, float, float]]],
    reference: str,
    title: str = "",
) -> Figure:
    """Table 2's paired comparison: one line per model, its Δ NLL against ``reference`` on the
    images both scored (> 0: worse than ``reference``), a point per seed at the mean with its
    95 % interval as a bar, seeds side by side; 0 dashed.

    ``differences``: model label -> ``[(seed label, mean, low, high), ...]`` in nats."""
    seeds = sorted({seed for found in differences.values() for seed, *_ in found})
    fig, ax = plt.subplots(
        figsize=(7.0, 1.2 + 0.55 * max(1, len(differences))), layout="constrained"
    )
    offset = 0.6 / max(1, len(seeds))
    for k, seed in enumerate(seeds):
        y, mean, low, high = [], [], [], []
        for i, found in enumerate(differences.values()):
            for s, m, lo, hi in found:
                if s == seed:
                    y.append(i + (k - (len(seeds) - 1) / 2) * offset)
                    mean.append(m)
                    low.append(m - lo)
                    high.append(hi - m)
        ax.errorbar(mean, y, xerr=[low, high], fmt="o", ms=4, capsize=2, lw=1,
                    label=f"seed {seed}")  # fmt: skip
    ax.axvline(0.0, color="0.4", ls="--", lw=0.8)
    ax.set_yticks(np.arange(len(differences)), list(differences))
    ax.set_ylim(len(differences) - 0.5, -0.5)  # the first model on top
    ax.set_xlabel(f"Δ NLL = NLL(model) − NLL({reference}), nats (95 % interval)")
    if seeds:
        ax.legend(fontsize=7, loc="best")
    if title:
        ax.set_title(_wrap(title, 0.95 * fig.get_figwidth(), 9), fontsize=9)
    return fig


# --- reports (Fig. 7, 19, 20) and image grids ---------------------------------------------------
def plot_smoothness_per_dim(
    bars: Mapping[str, tuple[np.ndarray, np.ndarray]],
    channels: Sequence[str] | None = None,
    title: str = "",
) -> Figure:
    """Fig. 7: the smoothness factor (sec. 4.2) per output dimension: a bar at the mean over
    the interpolations, a whisker of +- 1 std whose lower end is clipped at 0 (the factor is
    >= 0); one group of bars per model (``bars``: label -> ``(mean (D,), std (D,))``).

    ``channels``: the D dimensions' names (e.g. the CMU joint channels) as tick labels; more
    than 20 of them are drawn as horizontal bars, one name per row, so every name stays
    readable. Unnamed dimensions get at most 11 numbered ticks."""
    n_dims = max(len(mean) for mean, _ in bars.values())
    width = 0.8 / len(bars)
    horizontal = channels is not None and n_dims > 20
    if horizontal:
        size = (9.0, 1.4 + (0.12 + 0.06 * len(bars)) * n_dims)
    else:
        size = (max(8.0, 0.32 * n_dims), 3.8) if channels is not None else (8.0, 3.2)
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    for k, (label, (mean, std)) in enumerate(bars.items()):
        mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        down = np.clip(mean - np.maximum(mean - std, 0.0), 0.0, None)  # whisker stops at 0
        err = np.stack([down, std])  # (2, D): below, above
        x = np.arange(len(mean)) + (k - (len(bars) - 1) / 2) * width
        style: dict[str, Any] = {"label": label or None, "capsize": 1.5, "error_kw": {"lw": 0.6}}
        if horizontal:
            ax.barh(x, mean, width, xerr=err, **style)
        else:
            ax.bar(x, mean, width, yerr=err, **style)
    value = "smoothness factor (RMS 2nd diff.)"
    if horizontal:
        assert channels is not None
        ax.set_yticks(np.arange(n_dims), list(channels), fontsize=8)
        ax.set_ylim(n_dims - 0.5, -0.5)  # the first channel on top
        ax.set_xlabel(value)
        ax.set_xlim(left=0)
    else:
        if channels is not None:
            ax.set_xticks(np.arange(n_dims), list(channels), rotation=45, ha="right", fontsize=8)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(10, integer=True, steps=[1, 2, 5, 10]))
            ax.set_xlabel("output dimension")
        ax.set_ylabel(value)
        ax.set_ylim(bottom=0)
    _set_title(ax, title, share=0.95)
    if len(bars) > 1 or any(bars):
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    what = "bar: mean over the interpolations; whisker: ± 1 std, clipped at 0 (the factor is ≥ 0)"
    fig.supxlabel(what, fontsize=8)
    return fig


def plot_rate_distortion(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Fig. 19: distortion vs rate coloured by NLL (left), NLL (or -ELBO) vs rate (right).

    ``rows``: one per run with ``job`` (its label on the plot), ``rate``, ``distortion``,
    ``nll`` (NaN: none logged) and ``negative_elbo``."""
    rate = [float(r["rate"]) for r in rows]
    dist = [float(r["distortion"]) for r in rows]
    nll = [float(r["nll"]) for r in rows]
    have_nll = any(np.isfinite(v) for v in nll)
    fig, (ax_rd, ax_n) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    known = [bool(np.isfinite(v)) for v in nll]
    if have_nll:
        sel = [i for i, k in enumerate(known) if k]
        pts = ax_rd.scatter([rate[i] for i in sel], [dist[i] for i in sel],
                            c=[nll[i] for i in sel], cmap="viridis", s=40, zorder=3)  # fmt: skip
        fig.colorbar(pts, ax=ax_rd, fraction=0.046, pad=0.04, label="test NLL (nats)")
    rest = [i for i, k in enumerate(known) if not k]  # no NLL logged: hollow grey
    ax_rd.scatter([rate[i] for i in rest], [dist[i] for i in rest], s=40, zorder=3,
                  facecolors="none", edgecolors="0.4", label="no test NLL")  # fmt: skip
    if rest and have_nll:
        ax_rd.legend(fontsize=7)
    for r, x, y in zip(rows, rate, dist, strict=True):
        ax_rd.annotate(str(r["job"]), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    finite = [(x, y) for x, y in zip(rate, dist, strict=True) if np.isfinite(x + y)]
    if finite:  # lines of equal -ELBO = rate + distortion
        lo, hi = min(x + y for x, y in finite), max(x + y for x, y in finite)
        for total in {lo, hi}:
            xs = [0.0, total]
            ax_rd.plot(xs, [total - x for x in xs], ls=":", lw=0.8, color="0.5", zorder=1)
        ax_rd.set_xlim(0, max(x for x, _ in finite) * 1.1 + 1e-9)
        ax_rd.set_ylim(min(y for _, y in finite) * 0.9, max(y for _, y in finite) * 1.1 + 1e-9)
    ax_rd.set_xlabel("rate: KL term (nats)")
    ax_rd.set_ylabel("distortion: E_q[-log p(x|z)] (nats)")
    ax_rd.set_title("rate vs distortion (dotted: equal -ELBO)", fontsize=9)
    ys: list[float] = list(nll) if have_nll else [float(r["negative_elbo"]) for r in rows]
    ax_n.scatter(rate, ys, s=40, color="tab:red")  # NaN NLLs are left out
    for r, a, b in zip(rows, rate, ys, strict=True):
        ax_n.annotate(str(r["job"]), (a, b), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax_n.set_xlabel("rate: KL term (nats)")
    ax_n.set_ylabel("test NLL (nats)" if have_nll else "-ELBO = rate + distortion (train, nats)")
    ax_n.set_title("NLL vs rate" if have_nll else "no test/nll logged: -ELBO vs rate", fontsize=9)
    return fig


def plot_kl_per_dim(kl: np.ndarray) -> Figure:
    """Fig. 20: the expected KL(q(zeta_j|z) || p(zeta_j)) of each inner-latent dimension,
    ``kl: (D_zeta,)``, sorted, on a log scale (values below 1e-6 drawn at 1e-6)."""
    values = np.maximum(np.sort(np.asarray(kl, dtype=np.float64))[::-1], 1e-6)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(range(1, len(values) + 1), values)
    ax.set_yscale("log")
    ax.set_xlabel("dimension of zeta (sorted)")
    ax.set_ylabel("E[KL(q(zeta_j|z) || p(zeta_j))] (nats)")
    fig.tight_layout()
    return fig


def plot_image_grid(images: torch.Tensor, nrow: int, title: str = "") -> Figure:
    """``images: (N, C, H, W)`` in [0, 1] as one grid of ``nrow`` columns (grey for C = 1)."""
    from torchvision.utils import make_grid  # torchvision only where grids are drawn

    grid = make_grid(images.clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    rows = math.ceil(len(images) / nrow)
    fig, ax = plt.subplots(figsize=(1.0 * nrow, 1.0 * rows + 0.4), layout="constrained")
    ax.imshow(grid.permute(1, 2, 0).numpy(), vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def plot_path_with_jumps(
    images: np.ndarray,
    angles_deg: np.ndarray,
    jumps_deg: np.ndarray,
    threshold_deg: float,
    image_shape: tuple[int, int],
    title: str = "",
    per_row: int = 20,
) -> Figure:
    """Fig. 4 with its blue boxes computed: every decoded image of a path, the angle read off
    it beneath (``angles_deg: (P,)``), and a blue box around both images of each step whose
    angle change ``jumps_deg: (P - 1,)`` exceeds ``threshold_deg``
    (``analysis.pendulum_paths.angle_jumps``).

    ``images: (P, D)`` with ``image_shape = (H, W)``; ``per_row`` images per row (none skipped,
    so no jump is hidden).
    """
    images = np.asarray(images, dtype=np.float64).reshape(-1, *image_shape)
    angles_deg = np.asarray(angles_deg, dtype=np.float64)
    jump = np.asarray(jumps_deg, dtype=np.float64) > threshold_deg
    if angles_deg.shape != (len(images),) or jump.shape != (len(images) - 1,):
        raise ValueError(
            f"angles_deg must be ({len(images)},) and jumps_deg ({len(images) - 1},), got "
            f"{angles_deg.shape} and {jump.shape}"
        )
    boxed = np.zeros(len(images), dtype=bool)
    boxed[:-1] |= jump
    boxed[1:] |= jump
    n_rows = max(1, math.ceil(len(images) / per_row))
    cols = min(per_row, len(images))
    size = (max(0.6 * cols, 5.0), 0.85 * n_rows + 0.6)
    fig, axes = plt.subplots(n_rows, cols, figsize=size, squeeze=False, layout="constrained")
    vmin, vmax = min(0.0, float(images.min())), max(1.0, float(images.max()))
    for t, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if t >= len(images):
            ax.set_axis_off()
            continue
        ax.imshow(images[t], cmap="gray", vmin=vmin, vmax=vmax)
        ax.set_xlabel(f"{angles_deg[t] % 360:.0f}°", fontsize=6, labelpad=1)
        for spine in ax.spines.values():
            spine.set_edgecolor("tab:blue" if boxed[t] else "0.7")
            spine.set_linewidth(2.5 if boxed[t] else 0.5)
    if title:
        fig.suptitle(_wrap(title, 0.95 * fig.get_figwidth(), 8), fontsize=8)
    return fig
