"""Figures of the paper: latent graphs with interpolation paths (Fig. 3, 5) and image strips
(Fig. 4, 8), and latents coloured by a factor (Fig. 2, 16).

Every function returns a ``matplotlib.figure.Figure`` (never shown; the entry points select the
Agg backend); save it with ``fig.savefig(path)`` and close it with ``matplotlib.pyplot.close(fig)``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from sklearn.decomposition import PCA


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
        fig = ax.figure
    edges = np.array([(u, v) for u, v in graph.edges()], dtype=np.int64).reshape(-1, 2)
    weights = np.array([w for _, _, w in graph.edges(data="weight", default=1.0)])
    if max_edges is not None and len(edges) > max_edges:
        keep = np.random.default_rng(seed).choice(len(edges), max_edges, replace=False)
        edges, weights = edges[keep], weights[keep]
    if len(edges):
        lines = LineCollection(nodes_2d[edges], cmap="Blues_r", linewidths=0.4, zorder=1)
        lines.set_array(weights)
        ax.add_collection(lines)
        fig.colorbar(lines, ax=ax, fraction=0.046, pad=0.04, label="edge weight")
    ax.scatter(*nodes_2d.T, s=2, c="0.3", zorder=2)
    colours = PATH_COLOURS if len(paths_2d) > 1 else ("red",)
    for k, p in enumerate(paths_2d):
        colour = colours[k % len(colours)]
        ax.plot(*p.T, "-", color=colour, lw=1.8, zorder=3)
        ax.plot(*p[[0, -1]].T, "o", color=colour, ms=5, zorder=4)
    ax.set_title(title + note, fontsize=9)
    ax.set_xlabel("$z_1$" if not note else "PC 1")
    ax.set_ylabel("$z_2$" if not note else "PC 2")
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    return fig


def plot_image_strip(
    images: np.ndarray,
    image_shape: tuple[int, int] | None = None,
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
    top = 0.98 if title is None else 0.8
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=top, wspace=0.05)
    for ax, image in zip(axes[0], images, strict=True):
        ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_xticks([])
        ax.set_yticks([])
    if title is not None:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_latents(
    latents: np.ndarray,
    values: np.ndarray,
    title: str = "Latent representation",
    cyclic: bool = True,
) -> Figure:
    """Latents coloured by a factor (Fig. 2, 16), e.g. the pendulum's joint angle.

    Args:
        latents: ``(N, d)``, projected with PCA when ``d > 2``.
        values: ``(N,)`` the colour; ``cyclic=True`` uses a cyclic colour map (angles).
    """
    latents = np.asarray(latents, dtype=np.float64)
    (latents_2d,), note = _to_2d(latents)
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    points = ax.scatter(
        *latents_2d.T, s=3, c=np.asarray(values), cmap="twilight" if cyclic else "viridis"
    )
    fig.colorbar(points, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title + note, fontsize=9)
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


def _colour_values(values: np.ndarray, cyclic: bool) -> tuple[np.ndarray, str, str]:
    """Colours, colour map and colour-bar label of ``values: (N,)``: angles (floats) on a cyclic
    map, class labels (integers) on a qualitative one."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.integer):
        n = len(np.unique(values))
        return values, "tab10" if n <= 10 else "tab20" if n <= 20 else "viridis", "label"
    return values, "twilight" if cyclic else "viridis", "joint angle" if cyclic else "value"


def plot_posterior_and_prior(
    means: np.ndarray,
    stds: np.ndarray,
    angles: np.ndarray,
    prior_samples: np.ndarray,
    title: str = "",
    cyclic: bool = True,
) -> Figure:
    """Fig. 2 of the paper in one row: posterior means coloured by the angle, the same means in
    greyscale by each point's posterior std (mean over latent dims; its spread across points is
    the "variance of the standard deviation" of Fig. 2), and samples of the prior (blue) with
    the posterior means drawn over them (dark grey).

    All three panels share one window (the union of means and prior samples), so the last one
    shows directly whether the prior covers the encoded data (the pendulum's ring) or sits
    beside it. ``means, stds: (N, d)``, ``angles: (N,)`` (floats: an angle, cyclic colours; or
    integer class labels), ``prior_samples: (M, d)``; PCA fitted on the means when d > 2.
    """
    (m2, p2), note = _to_2d(np.asarray(means, np.float64), np.asarray(prior_samples, np.float64))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True, layout="constrained")
    colours, cmap, label = _colour_values(angles, cyclic)
    pts = axes[0].scatter(*m2.T, s=3, c=colours, cmap=cmap)
    fig.colorbar(pts, ax=axes[0], fraction=0.046, pad=0.04, label=label)
    std = np.asarray(stds, np.float64).mean(axis=1)
    grey = axes[1].scatter(*m2.T, s=3, c=std, cmap="Greys")
    fig.colorbar(grey, ax=axes[1], fraction=0.046, pad=0.04, label="posterior std")
    axes[2].scatter(*p2.T, s=2, c="tab:blue", alpha=0.4, label="z ~ p(z)")
    axes[2].scatter(*m2.T, s=1, c="0.15", alpha=0.5, label="q(z|x) means")
    axes[2].legend(fontsize=7, loc="upper right", markerscale=3)
    (x_lim, y_lim) = _shared_limits(m2, p2)
    names = ("q(z|x): means", f"q(z|x): std (var {std.var():.2g})", "prior and the means")
    for ax, name in zip(axes, names, strict=True):
        ax.set_title(name + note, fontsize=9)
        ax.set_xlim(*x_lim)
        ax.set_ylim(*y_lim)
        ax.set_aspect("equal", adjustable="box")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_beta_trace(
    steps: np.ndarray,
    betas: np.ndarray,
    c_hats: np.ndarray,
    kappa_sq: float | None = None,
    switch_step: int | None = None,
    title: str = "",
) -> Figure:
    """beta and the running constraint C_t against the step (Fig. 2, right), log scales.

    ``kappa_sq``: the bound kappa^2 as a dashed line; ``switch_step``: the step at which REWO
    (Alg. 1) left its initial phase, marked on both axes (``None``: no switch, or no phases).
    """
    fig, (ax_b, ax_c) = plt.subplots(2, 1, figsize=(6, 5), sharex=True, layout="constrained")
    ax_b.plot(steps, betas, lw=1)
    ax_b.set_yscale("log")
    ax_b.set_ylabel("beta")
    ax_c.plot(steps, c_hats, lw=1, label="C_t")
    if kappa_sq is not None:
        ax_c.axhline(kappa_sq, color="tab:red", ls="--", lw=1, label="kappa^2")
    if switch_step is not None:
        for ax in (ax_b, ax_c):
            ax.axvline(switch_step, color="tab:green", ls=":", lw=1.5)
        ax_c.plot(
            [], [], color="tab:green", ls=":", lw=1.5, label=f"main phase (step {switch_step})"
        )
    if title:
        ax_b.set_title(title, fontsize=9)
    ax_c.set_yscale("log")
    ax_c.set_ylabel("C_t")
    ax_c.set_xlabel("step")
    ax_c.legend(fontsize=8)
    return fig
