"""The paper's interpolation analysis of a trained model, as files (sec. 2.3, 4.1, 4.2, 4.4).

``interpolation_analysis`` writes, with ``vhp_lightning.analysis.graph`` (the paths) and
``vhp_lightning.analysis.figures`` (the drawing):

- ``strip_<k>.png``: ``n_strips`` decoded interpolation paths on the first graph, as image strips
  for image data (Fig. 4, 8) or as feature trajectories along the path for vectors such as the
  50-d motion features (Fig. 6, 18). With integer labels the first path joins two points of the
  same class and the others join different classes (Fig. 5);
- ``graph_paths.png``: the latent graph with those paths (Fig. 3, 5);
- ``latents_by_label.png``: posterior means coloured by label beside the prior samples (Fig. 17);
- ``interpolations.csv``: every interpolation of ``n_graphs`` graphs x ``n_pairs`` random
  endpoint pairs with its smoothness factor (sec. 4.2), and ``interpolation_summary.csv`` with the
  averages (Fig. 7); for non-image data also ``smoothness_per_dim.{csv,png}`` (mean and std
  over the interpolations of each output dimension, e.g. each joint: Fig. 7).

Endpoint pairs whose graph has no path between them are counted (``n_disconnected``) and
reported in a warning, not raised.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from vhp_lightning.analysis.eval_mode import evaluating, model_device
from vhp_lightning.analysis.figures import (
    is_discrete,
    plot_graph_path,
    plot_image_strip,
    plot_latents_by_label,
    plot_smoothness_per_dim,
    plot_trajectories,
    save_figure,
)
from vhp_lightning.analysis.graph import (
    DisconnectedGraphError,
    build_graph,
    shortest_path,
    smoothness_factor,
)
from vhp_lightning.io.config_values import int_at_least, non_negative_int, positive_int
from vhp_lightning.io.files import atomic_open

log = logging.getLogger(__name__)
STRIP_IMAGES = 16  # decoded images per strip, at most

CSV_FIELDS = (
    "graph", "pair", "start", "goal", "start_label", "goal_label", "connected", "n_points",
    "latent_length", "smoothness",
)  # fmt: skip


def _labels_array(labels: Any, n: int) -> tuple[np.ndarray | None, list[str] | None]:
    """``(labels (N,), class names or None)``: strings become class indices with names."""
    if labels is None:
        return None, None
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) like x's first dim, got {labels.shape}")
    if labels.dtype.kind in "OUS":
        names, index = np.unique(labels.astype(str), return_inverse=True)
        return index.astype(np.int64), [str(s) for s in names]
    return labels, None


@torch.no_grad()
def _encode_means(model: Any, x: torch.Tensor, device: torch.device, chunk: int = 1000):
    """Posterior means ``(N, d)`` float64, ``chunk`` data points at a time."""
    means = [model.encode(b.to(device))[0].double().cpu() for b in x.split(chunk)]
    return torch.cat(means).reshape(len(x), -1).numpy()


@torch.no_grad()
def _decode(model: Any, path: np.ndarray, like: torch.Tensor) -> np.ndarray:
    z = torch.as_tensor(path, dtype=like.dtype, device=like.device)
    return model.decode(z).reshape(len(z), -1).double().cpu().numpy()


def _strip_pairs(
    labels: np.ndarray | None, n: int, n_strips: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Endpoint pairs for the strips: with discrete labels, one within a class (Fig. 5, black)
    and the rest across classes; otherwise random pairs."""
    if not is_discrete(labels):
        draws = (rng.choice(n, 2, replace=False) for _ in range(n_strips))
        return [(int(i), int(j)) for i, j in draws]
    assert labels is not None  # is_discrete(None) is False
    classes = [c for c in np.unique(labels)]
    members = {c: np.flatnonzero(labels == c) for c in classes}
    pairs: list[tuple[int, int]] = []
    within = next((c for c in classes if len(members[c]) >= 2), None)
    if within is not None:
        a, b = rng.choice(members[within], 2, replace=False)
        pairs.append((int(a), int(b)))
    k = 0
    while len(pairs) < n_strips:
        if len(classes) < 2:
            a, b = rng.choice(n, 2, replace=False)
        else:
            ca, cb = classes[k % len(classes)], classes[(k + 1) % len(classes)]
            a, b = rng.choice(members[ca]), rng.choice(members[cb])
        pairs.append((int(a), int(b)))
        k += 1
    return pairs[:n_strips]


def _write_csv(path: Path, header: list[str] | tuple[str, ...], rows: list[list[Any]]) -> None:
    with atomic_open(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def interpolation_analysis(
    model: Any,
    x: torch.Tensor,
    labels: Any,
    out_dir: str | Path,
    *,
    n_nodes: int,
    n_neighbors: int,
    n_graphs: int,
    n_pairs: int,
    n_strips: int = 4,
    seed: int = 0,
    label_name: str = "angle (rad)",
) -> dict[str, float]:
    """Graph-based interpolations of a trained ``model`` between points of ``x``, their figures
    and the averaged smoothness factor (sec. 2.3, 4.2; Fig. 3-8, 17).

    Args:
        model: has ``sample_prior(n) -> (n, d)``, ``encode(x) -> (mean (B, d), logvar)`` and
            ``decode(z: (B, d)) -> (B, D)`` (every model of ``vhp_lightning.models``).
        x: ``(N, *data_shape)`` data points (e.g. the test split); endpoints are their
            posterior means. Images are ``(N, 1, H, W)`` or ``(N, H, W)``, anything else is
            treated as vectors.
        labels: ``(N,)`` ints (classes, e.g. motions), strings (class names), floats (e.g. the
            pendulum angle; a cyclic colour map) or None.
        out_dir: where the PNG and CSV files go (created).
        n_nodes, n_neighbors: graph size (App. F: pendulum 1000/18, CMU 2530/15, Faces 10000/18).
        n_graphs: graphs, each from fresh prior samples (torch seed ``seed + g``).
        n_pairs: random endpoint pairs per graph (numpy generator ``seed``).
        n_strips: decoded paths drawn on the first graph.
        label_name: what float ``labels`` are, with their unit in brackets, for the colour
            bar and the strip titles (default ``"angle (rad)"``: the pendulum's joint angle).

    Returns:
        ``smoothness_mean`` (Fig. 7: mean over all connected interpolations), ``smoothness_std``,
        ``smoothness_graph_std`` (std of the per-graph means), ``n_interpolations``,
        ``n_connected``, ``n_disconnected``, ``disconnected_fraction``, ``path_points_mean``,
        ``latent_length_mean``. Means are NaN when no pair was connected.
    """
    n_nodes = int_at_least(2, "n_nodes", n_nodes)
    n_neighbors = positive_int("n_neighbors", n_neighbors)
    n_graphs, n_pairs = positive_int("n_graphs", n_graphs), positive_int("n_pairs", n_pairs)
    n_strips = non_negative_int("n_strips", n_strips)
    x = torch.as_tensor(x)
    if len(x) < 2:
        raise ValueError(f"x needs at least 2 data points to interpolate between, got {len(x)}")
    labels_np, names = _labels_array(labels, len(x))
    image_shape = (
        tuple(x.shape[-2:]) if x.dim() == 3 or (x.dim() == 4 and x.shape[1] == 1) else None
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[list[Any]] = []
    per_dim_rows: list[np.ndarray] = []
    per_graph, messages = [], []
    with evaluating(model):
        means = _encode_means(model, x, model_device(model))
        for g in range(n_graphs):
            torch.manual_seed(seed + g)
            z_nodes = model.sample_prior(n_nodes)
            nodes = z_nodes.double().cpu().numpy()
            graph = build_graph(nodes, n_neighbors)
            if g == 0:
                first = (nodes, graph, z_nodes)
            scores = []
            for p in range(n_pairs):
                i, j = (int(v) for v in rng.choice(len(x), 2, replace=False))
                li = "" if labels_np is None else labels_np[i]
                lj = "" if labels_np is None else labels_np[j]
                try:
                    path = shortest_path(graph, nodes, means[i], means[j], n_neighbors)
                except DisconnectedGraphError as e:
                    messages.append(f"graph {g}, pair {p} ({i} -> {j}): {e}")
                    rows.append([g, p, i, j, li, lj, False, 0, "", ""])
                    continue
                s = smoothness_factor(_decode(model, path.points, z_nodes))
                per_dim_rows.append(s["per_dim"])
                scores.append(s["mean"])
                rows.append([g, p, i, j, li, lj, True, len(path.points), path.length, s["mean"]])
            if scores:
                per_graph.append(float(np.mean(scores)))
        figures = _strip_figures(model, means, labels_np, names, first, n_neighbors, n_strips,
                                 image_shape, np.random.default_rng(seed + 1),
                                 label_name)  # fmt: skip

    for name, fig in figures:
        save_figure(fig, out / f"{name}.png")
    fig = plot_latents_by_label(means, labels_np, first[0], names, colour_label=label_name)
    save_figure(fig, out / "latents_by_label.png")
    _write_csv(out / "interpolations.csv", CSV_FIELDS, rows)

    connected = [r for r in rows if r[6]]
    smooth = np.array([r[9] for r in connected], dtype=np.float64)
    nan = float("nan")
    summary = {
        "smoothness_mean": float(smooth.mean()) if len(smooth) else nan,
        "smoothness_std": float(smooth.std()) if len(smooth) else nan,
        "smoothness_graph_std": float(np.std(per_graph)) if per_graph else nan,
        "n_interpolations": float(len(rows)),
        "n_connected": float(len(connected)),
        "n_disconnected": float(len(rows) - len(connected)),
        "disconnected_fraction": (len(rows) - len(connected)) / len(rows),
        "path_points_mean": float(np.mean([r[7] for r in connected])) if connected else nan,
        "latent_length_mean": float(np.mean([r[8] for r in connected])) if connected else nan,
    }
    summary_rows = [[key, value] for key, value in summary.items()]
    _write_csv(out / "interpolation_summary.csv", ("metric", "value"), summary_rows)
    if per_dim_rows and image_shape is None:
        per_dim = np.stack(per_dim_rows)  # (n_connected, D)
        mean, std = per_dim.mean(axis=0), per_dim.std(axis=0)
        _write_csv(
            out / "smoothness_per_dim.csv",
            ("dim", "smoothness", "smoothness_std"),
            [[d, float(m), float(v)] for d, (m, v) in enumerate(zip(mean, std, strict=True))],
        )
        title = f"mean over {len(connected)} interpolations: {summary['smoothness_mean']:.4g}"
        fig = plot_smoothness_per_dim({"": (mean, std)}, title=title)
        save_figure(fig, out / "smoothness_per_dim.png")
    if messages:
        log.warning(
            "%d of %d interpolations had no path (disconnected graph); first: %s",
            len(messages), len(rows), messages[0],
        )  # fmt: skip
    return summary


def _strip_figures(
    model: Any,
    means: np.ndarray,
    labels: np.ndarray | None,
    names: list[str] | None,
    first: tuple[np.ndarray, Any, torch.Tensor],
    n_neighbors: int,
    n_strips: int,
    image_shape: tuple[int, ...] | None,
    rng: np.random.Generator,
    label_name: str = "angle (rad)",
) -> list[tuple[str, Figure]]:
    """Decoded strips of ``n_strips`` paths on the first graph and the graph plot with them.

    A strip's title says what its numbers are: the indices of the two data points (rows of
    ``x``) the path joins, their labels (e.g. ``angle 5.11 -> 0.02 rad``), the points on the
    path and its smoothness factor."""
    nodes, graph, z_nodes = first
    figures, paths = [], []
    for k, (i, j) in enumerate(_strip_pairs(labels, len(means), n_strips, rng)):
        ends = f"data points {i} → {j}" + _label_change(labels, names, i, j, label_name)
        try:
            path = shortest_path(graph, nodes, means[i], means[j], n_neighbors)
        except DisconnectedGraphError as e:
            log.warning("strip %d (%s): %s", k, ends, e)
            continue
        paths.append(path.points)
        decoded = _decode(model, path.points, z_nodes)
        smoothness = smoothness_factor(decoded)["mean"]
        images = image_shape is not None and len(decoded) > STRIP_IMAGES
        shown = f" ({STRIP_IMAGES} shown)" if images else ""
        title = (
            f"path between {ends}: {len(decoded)} latent points{shown}; smoothness factor "
            f"(RMS 2nd difference of the decoded path) {smoothness:.3g}"
        )
        if image_shape is not None:
            fig = plot_image_strip(decoded, image_shape, title=title, max_images=STRIP_IMAGES)
        else:
            fig = plot_trajectories(decoded, title)
        figures.append((f"strip_{k}", fig))
    title = f"{len(nodes)} prior samples, {n_neighbors} neighbours, {len(paths)} paths"
    figures.append(("graph_paths", plot_graph_path(nodes, graph, paths, title=title)))
    return figures


def _label_change(
    labels: np.ndarray | None, names: list[str] | None, i: int, j: int, label_name: str
) -> str:
    """``", walk → run"`` (class names), ``", class 3 → 5"`` or ``", angle 5.11 → 0.02 rad"``
    (floats, named ``label_name`` = ``"<name> (<unit>)"``) for data points ``i`` and ``j``."""
    if labels is None:
        return ""
    if names is not None:
        return f", {names[int(labels[i])]} → {names[int(labels[j])]}"
    if is_discrete(labels):
        return f", class {labels[i]} → {labels[j]}"
    name, _, unit = label_name.partition(" (")
    return f", {name} {labels[i]:.2f} → {labels[j]:.2f}" + (f" {unit.rstrip(')')}" if unit else "")
