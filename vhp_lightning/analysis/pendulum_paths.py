"""Discontinuities of graph-based interpolations on the pendulum (sec. 4.1, Figs. 3-4), as a number.

Fig. 4 marks by eye where a decoded path jumps (blue boxes). Here each decoded image of a path
gets an angle read off it, and a path is *discontinuous* when two consecutive images differ in
angle by more than ``threshold_deg``:

1. The graph of sec. 2.3 over ``n_prior`` samples z ~ p(z), ``k`` neighbours (App. F: 1000 / 18;
   ``analysis.graph``); ``n_pairs`` random pairs of test images, each joined by the shortest path
   between their posterior means; each path's latents decoded to images E[x|z].
2. The angle of an image is read by ``AngleReader``: a 5-nearest-neighbour regression of
   (cos, sin) of the angle, the regressor of Table 1's ``knn_angle_error``, fitted on the *test
   images themselves* (pixels, ``reader="pixels"``, the default) or on their posterior means with
   the decoded images encoded first (``reader="latent"``). The pixel reader is the ruler of
   choice: it does not depend on the model under test, so the same decoded image reads the same
   angle for every checkpoint, and it judges the images a reader of Fig. 4 sees. The latent reader
   reads through the model's own encoder, which is what Table 1 grades: a poor encoder makes a
   poor ruler, and it can map a blurred, off-manifold image anywhere.
3. The angle sequence of a path is (true angle of x_i, the P read angles, true angle of x_j):
   an interpolation must leave from x_i and arrive at x_j, so a decoder that misses its endpoints
   (a collapsed model decodes every z to one image and would otherwise look perfectly "smooth")
   jumps at the ends. ``angle_jumps``: ``|wrap(a_{t+1} - a_t)|`` in degrees between consecutive
   entries; the largest jump of a path decides (``largest > threshold_deg``).

Why 30 degrees: 1000 prior samples on the ring of a good pendulum prior are 0.36 degrees apart
on average; an 18-nearest-neighbour graph joins each sample to the 9 next on each side, so one
edge of a shortest path covers about 9 x 0.36 = 3.2 degrees (a few times more where the prior puts
fewer samples per degree), and the reader adds well under 1 degree (1500 test images, 0.24 degrees
apart; ``reader_error_deg`` reports it).
A jump of 30 degrees is ten such steps skipped -- no smooth motion -- and still far below the
90-180 degrees of a path that crosses the ring (Fig. 4, middle and bottom rows).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.neighbors import KNeighborsRegressor

from vhp_lightning.analysis.eval_mode import evaluating
from vhp_lightning.analysis.figures import plot_graph_path, plot_path_with_jumps, save_figure
from vhp_lightning.analysis.graph import DisconnectedGraphError, build_graph, shortest_path
from vhp_lightning.analysis.pendulum import wrap_angle
from vhp_lightning.io.config_values import positive_int
from vhp_lightning.io.files import atomic_open

READERS = ("pixels", "latent")


def angle_jumps(angles_rad: np.ndarray) -> np.ndarray:
    """``(P - 1,)`` absolute angle changes in degrees, in [0, 180], between consecutive entries of
    ``angles_rad: (P,)`` (radians; wrapped, so 359 -> 1 degree is a 2-degree step)."""
    angles_rad = np.asarray(angles_rad, dtype=np.float64)
    if angles_rad.ndim != 1:
        raise ValueError(f"angles_rad must be 1-d (P,), got shape {angles_rad.shape}")
    return np.degrees(np.abs(wrap_angle(np.diff(angles_rad))))


def is_discontinuous(angles_rad: np.ndarray, threshold_deg: float) -> tuple[bool, float]:
    """``(largest jump > threshold_deg, largest jump in degrees)`` of one path (0 for P < 2)."""
    jumps = angle_jumps(angles_rad)
    largest = float(jumps.max()) if len(jumps) else 0.0
    return largest > threshold_deg, largest


@torch.no_grad()
def _means(model: Any, x: torch.Tensor, chunk: int = 1000) -> np.ndarray:
    """Posterior means ``(N, d)`` float64 of ``x: (N, *data_shape)``."""
    return torch.cat([model.encode(b)[0].double().cpu() for b in x.split(chunk)]).numpy()


class AngleReader:
    """Reads the pendulum angle off images: a ``k``-NN regression of (cos, sin) of the angle
    (Table 1's ``knn_angle_error`` regressor), fitted on ``x_ref: (N, *data_shape)`` with its
    ``angles_ref: (N,)`` radians, on pixels or on the model's posterior means (``reader``)."""

    def __init__(
        self,
        model: Any,
        x_ref: torch.Tensor,
        angles_ref: np.ndarray,
        reader: str = "pixels",
        k: int = 5,
    ) -> None:
        if reader not in READERS:
            raise ValueError(f"Unknown reader {reader!r}. Choose one of: {', '.join(READERS)}.")
        self.model, self.reader, self.data_shape = model, reader, tuple(x_ref.shape[1:])
        self.targets = np.column_stack([np.cos(angles_ref), np.sin(angles_ref)])  # (N, 2)
        self.knn = KNeighborsRegressor(n_neighbors=k).fit(self._features(x_ref), self.targets)

    def _features(self, x: torch.Tensor) -> np.ndarray:
        if self.reader == "latent":
            return _means(self.model, x)
        return x.reshape(len(x), -1).double().cpu().numpy()

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """``images: (P, D)`` or ``(P, *data_shape)`` -> ``(P,)`` angles in (-pi, pi]."""
        predicted = self.knn.predict(self._features(images.reshape(-1, *self.data_shape)))
        return np.arctan2(predicted[:, 1], predicted[:, 0])


def _nearest(angles: np.ndarray, target_rad: float) -> int:
    """Index of the angle closest (circularly) to ``target_rad``."""
    return int(np.argmin(np.abs(wrap_angle(angles - target_rad))))


def path_discontinuity(
    model: Any,
    x_test: torch.Tensor,
    angles: Any,
    n_prior: int = 1000,
    k: int = 18,
    n_pairs: int = 100,
    threshold_deg: float = 30.0,
    seed: int = 0,
    reader: str = "pixels",
    endpoints_deg: tuple[float, float] = (0.0, 180.0),
) -> dict[str, Any]:
    """The fraction of graph interpolations with a discontinuity (module docstring).

    Args:
        model: ``sample_prior(n) -> (n, d)``, ``encode(x) -> (mean (B, d), logvar)``,
            ``decode(z: (B, d)) -> (B, D)`` (every model of ``vhp_lightning.models``).
        x_test: ``(N, *data_shape)`` test images; ``angles``: ``(N,)`` their angles, radians.
        n_prior, k: graph nodes z ~ p(z) (torch seed ``seed``) and neighbours (App. F).
        n_pairs: random endpoint pairs (numpy generator ``seed``), distinct images.
        threshold_deg: a path is discontinuous when its largest angle jump exceeds this.
        reader: ``"pixels"`` or ``"latent"``, see ``AngleReader``.
        endpoints_deg: the showcase path (Figs. 3-4) joins the test images nearest these angles.

    Returns:
        ``fraction`` (discontinuous / connected paths), ``n_discontinuous``, ``n_connected``,
        ``n_disconnected`` (pairs in different graph components: no path, not counted),
        ``mean_largest_jump_deg``, ``median_largest_jump_deg`` (over connected paths),
        ``mean_path_points`` (P), ``endpoint_error_deg`` (mean angle error of the decoded
        endpoints against x_i and x_j: the reconstruction part of the jumps),
        ``reader_error_deg`` (the reader's mean error on the test images themselves,
        leave-one-out: the ruler's resolution), the options, and for the figures
        ``pairs`` (per pair ``(i, j, largest_jump_deg or nan)``), ``nodes (n_prior, d)``,
        ``graph``, ``showcase``: ``{"start", "goal", "path" (P, d), "images" (P + 2, D): x_i,
        the decoded path, x_j, "angles_deg" (P + 2,), "largest_jump_deg",
        "endpoint_error_deg"}`` (``None`` when disconnected), and
        ``first_discontinuous``: the same for the first discontinuous pair (``None``: none).
    """
    x_test = torch.as_tensor(x_test)
    angles = np.asarray(torch.as_tensor(angles).double().cpu(), dtype=np.float64)
    if angles.shape != (len(x_test),) or not np.isfinite(angles).all():
        raise ValueError(
            f"angles must be ({len(x_test)},) finite radians (the pendulum's labels), got shape "
            f"{angles.shape}; path_discontinuity needs a dataset labelled with angles"
        )
    if len(x_test) < 6:
        raise ValueError(
            f"need at least 6 test images (a 5-NN reader and a pair), got {len(x_test)}"
        )
    if threshold_deg <= 0:
        raise ValueError(f"need threshold_deg > 0, got {threshold_deg}")
    n_pairs = positive_int("n_pairs", n_pairs)
    with evaluating(model):  # in a forked RNG: the seeded draw leaves the caller's as it was
        torch.manual_seed(seed)
        z_nodes = model.sample_prior(n_prior)
        nodes = z_nodes.double().cpu().numpy()
        graph = build_graph(nodes, k)
        means = _means(model, x_test)
        read = AngleReader(model, x_test, angles, reader)
        loo = read.knn.kneighbors(return_distance=False)  # (N, 5), each point left out
        loo_pred = read.targets[loo].mean(axis=1)  # (N, 2)
        loo_angle = np.arctan2(loo_pred[:, 1], loo_pred[:, 0])
        reader_error = float(np.degrees(np.abs(wrap_angle(angles - loo_angle))).mean())

        def run_path(i: int, j: int) -> dict[str, Any] | None:
            try:
                path = shortest_path(graph, nodes, means[i], means[j], k)
            except DisconnectedGraphError:
                return None
            z = torch.as_tensor(path.points, dtype=z_nodes.dtype, device=z_nodes.device)
            decoded = model.decode(z).reshape(len(z), -1).to(x_test.dtype)  # (P, D)
            ends = x_test[[i, j]].reshape(2, -1).to(decoded.device)  # (2, D)
            images = torch.cat([ends[:1], decoded, ends[1:]])  # (P + 2, D): x_i, path, x_j
            sequence = np.concatenate([angles[[i]], read(decoded), angles[[j]]])  # (P + 2,)
            _, largest = is_discontinuous(sequence, threshold_deg)
            end_error = np.abs(wrap_angle(sequence[[1, -2]] - sequence[[0, -1]]))
            return {"start": i, "goal": j, "path": path.points,
                    "images": images.double().cpu().numpy(), "angles_deg": np.degrees(sequence),
                    "largest_jump_deg": largest,
                    "endpoint_error_deg": float(np.degrees(end_error).mean())}  # fmt: skip

        rng = np.random.default_rng(seed)
        pairs, largest, points, end_errors, jumped = [], [], [], [], None
        for _ in range(n_pairs):
            i, j = (int(v) for v in rng.choice(len(x_test), 2, replace=False))
            result = run_path(i, j)
            pairs.append((i, j, float("nan") if result is None else result["largest_jump_deg"]))
            if result is not None:
                largest.append(result["largest_jump_deg"])
                points.append(len(result["path"]))
                end_errors.append(result["endpoint_error_deg"])
                if jumped is None and result["largest_jump_deg"] > threshold_deg:
                    jumped = result
        start = _nearest(angles, np.radians(endpoints_deg[0]))
        showcase = run_path(start, _nearest(angles, np.radians(endpoints_deg[1])))
    jumps = np.asarray(largest)
    n_disc = int((jumps > threshold_deg).sum())
    nan = float("nan")
    return {
        "fraction": n_disc / len(jumps) if len(jumps) else nan,
        "n_discontinuous": n_disc,
        "n_connected": len(jumps),
        "n_disconnected": n_pairs - len(jumps),
        "mean_largest_jump_deg": float(jumps.mean()) if len(jumps) else nan,
        "median_largest_jump_deg": float(np.median(jumps)) if len(jumps) else nan,
        "mean_path_points": float(np.mean(points)) if points else nan,
        "endpoint_error_deg": float(np.mean(end_errors)) if end_errors else nan,
        "reader_error_deg": reader_error,
        "threshold_deg": float(threshold_deg),
        "n_pairs": n_pairs,
        "n_prior": n_prior,
        "k": k,
        "reader": reader,
        "seed": seed,
        "pairs": pairs,
        "nodes": nodes,
        "graph": graph,
        "showcase": showcase,
        "first_discontinuous": jumped,
    }


SUMMARY_KEYS = (
    "fraction", "n_discontinuous", "n_connected", "n_disconnected", "mean_largest_jump_deg",
    "median_largest_jump_deg", "mean_path_points", "endpoint_error_deg", "reader_error_deg",
    "threshold_deg", "n_pairs", "n_prior", "k", "seed",
)  # fmt: skip


def pendulum_paths_analysis(
    model: Any, x_test: torch.Tensor, angles: Any, out_dir: str | Path, **options: Any
) -> dict[str, float]:
    """``path_discontinuity`` with both readers, written as files into ``out_dir``:

    - ``strip_0_180.png``: the 0 -> 180 degree path (test images at both ends, decoded path
      between), read angles and jumps boxed (Fig. 4),
      and ``strip_first_jump.png``, the same for the first discontinuous pair (if any);
    - ``graph_paths.png``: the graph over the prior samples with those paths (Fig. 3);
    - ``paths.csv``: each pair's endpoints, their angles and the largest jump under each reader.

    Returns the pixel reader's summary (``SUMMARY_KEYS``) and the latent reader's
    ``fraction``/``mean_largest_jump_deg``/``reader_error_deg`` with the suffix ``_latent``.
    ``options`` are ``path_discontinuity``'s keyword arguments (``reader`` excepted).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = path_discontinuity(model, x_test, angles, reader="pixels", **options)
    latent = path_discontinuity(model, x_test, angles, reader="latent", **options)
    summary = {key: float(result[key]) for key in SUMMARY_KEYS}
    for key in ("fraction", "mean_largest_jump_deg", "reader_error_deg"):
        summary[f"{key}_latent"] = float(latent[key])
    angles_deg = np.degrees(np.asarray(torch.as_tensor(angles).double().cpu()))
    with atomic_open(out / "paths.csv", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["start", "goal", "start_deg", "goal_deg", "largest_jump_deg",
                         "largest_jump_deg_latent"])  # fmt: skip
        for (i, j, jump), (_, _, jump_latent) in zip(result["pairs"], latent["pairs"], strict=True):
            writer.writerow(
                [i, j, f"{angles_deg[i]:.2f}", f"{angles_deg[j]:.2f}", jump, jump_latent]
            )
    height, width = torch.as_tensor(x_test).shape[-2:]
    threshold, image_shape = result["threshold_deg"], (int(height), int(width))
    drawn, names = [], []
    for name, run in (("0_180", result["showcase"]), ("first_jump", result["first_discontinuous"])):
        if run is None:
            continue
        a, b = angles_deg[run["start"]] % 360, angles_deg[run["goal"]] % 360
        jumps = angle_jumps(np.radians(run["angles_deg"]))
        title = (
            f"shortest path from the test image at {a:.1f}° to the one at {b:.1f}°: "
            f"the two test images at the ends, {len(jumps) - 1} decoded images between them "
            f"(angle read by 5-NN on the test images); largest step "
            f"{run['largest_jump_deg']:.1f}° (blue: steps > {threshold:g}°)"
        )
        fig = plot_path_with_jumps(run["images"], run["angles_deg"], jumps, threshold,
                                   image_shape, title=title)  # fmt: skip
        save_figure(fig, out / f"strip_{name}.png", dpi=120)
        drawn.append(run["path"])
        names.append(f"{a:.0f}° → {b:.0f}°")
    if drawn:
        title = f"{result['n_prior']} prior samples, {result['k']} neighbours; paths " + (
            " (black), ".join(names) + (" (orange)" if len(names) > 1 else "")
        )
        fig = plot_graph_path(result["nodes"], result["graph"], drawn, title=title)
        save_figure(fig, out / "graph_paths.png", dpi=120)
    return summary
