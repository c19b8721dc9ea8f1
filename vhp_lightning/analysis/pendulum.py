"""How well a 2-d latent holds the pendulum's joint angle (sec. 4.1, Table 1, App. B.3).

Three numbers, all mean absolute angular errors in radians (decision 8):

- ``arcsin_ols_error``: App. B.3 as written (OLS on arcsin(z2 / r)); blind to which half of the
  ring a point is on, so it is reported beside the two below, not instead of them.
- ``polar_ols_error``: the paper's reading -- the latent is a ring around a centre and its polar
  angle is a linear function of the joint angle. This is what Table 1 reports.
- ``knn_angle_error``: whether the angle can be read off the latent at all, whatever the shape
  of the loop (cross-validated k-nearest-neighbour regression).

A ring gives two small numbers; a closed loop of another shape (folded, passing near its
centre) gives a small kNN error and a large polar error; an uninformative latent gives two large
ones (pi/2 for a latent that ignores the angle). Report them with the latent plot
(``analysis.figures.plot_latents``) so a reader sees which case a run is in.

Whether the learned prior p(z) takes the shape of the encoded data (the paper's claim, a ring on
the pendulum) is ``prior_coverage``; ``prior_fit_report`` adds the prior nets' diagnostics.

Table 1's metrics are functions of one ``LatentSnapshot`` returning named numbers
(``angle_metrics``, ``posterior_noise_metrics``, ``prior_shape_metrics``); the callback
``vhp_lightning.callbacks.table1_metrics.PendulumMetrics`` calls the ones its config lists at
every snapshot, and ``report pendulum_table1`` tabulates every number they return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neighbors import KNeighborsRegressor, NearestNeighbors

from vhp_lightning.analysis.eval_mode import forked_rng, model_device
from vhp_lightning.io.config_values import positive_int


def wrap_angle(a: np.ndarray | float) -> np.ndarray:
    """Wrap angles (radians, any shape) into (-pi, pi]."""
    return np.pi - np.mod(np.pi - np.asarray(a, dtype=np.float64), 2.0 * np.pi)


def _check(latents: np.ndarray, angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    latents = np.asarray(latents, dtype=np.float64)
    angles = np.asarray(angles, dtype=np.float64)
    if latents.ndim != 2:
        raise ValueError(f"latents must be a 2-d array (N, d), got shape {latents.shape}")
    if angles.shape != (len(latents),):
        raise ValueError(
            f"angles must be (N,) = ({len(latents)},) to match latents, got shape {angles.shape}"
        )
    if not (np.isfinite(latents).all() and np.isfinite(angles).all()):
        raise ValueError("latents or angles contain NaN or inf")
    return latents, angles


def fit_circle(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Algebraic least-squares circle fit (Kasa) of ``points: (N, 2)``.

    Solves ``|p|^2 = 2 a . p + c`` for ``(a, c)`` by linear least squares (on mean-centred
    points, for conditioning). Returns ``(centre (2,), radius)`` with ``centre = a``,
    ``radius = sqrt(c + |a|^2)``. Exact for points on a circle, even on a short arc.
    """
    mean = points.mean(axis=0)
    u = points - mean
    design = np.column_stack([2.0 * u, np.ones(len(u))])
    (ax, ay, c), *_ = np.linalg.lstsq(design, (u**2).sum(axis=1), rcond=None)
    centre = mean + np.array([ax, ay])
    return centre, float(np.sqrt(max(c + ax**2 + ay**2, 0.0)))


def polar_ols_error(
    latents: np.ndarray, angles: np.ndarray, fit_slope: bool = True
) -> dict[str, Any]:
    """Mean absolute error of the joint angle predicted from the latent's polar angle (Table 1).

    Exactly what is computed, for ``latents: (N, 2)`` and joint ``angles: (N,)`` in radians:

    1. Centre: the least-squares circle fit (``fit_circle``), not the mean of the latents.
       Both coincide for a ring covered evenly, but the encoder need not spread the angles
       evenly around its ring; the mean is then pulled towards the densely covered arc, while
       the circle fit depends only on where the points lie, not on how many lie where.
    2. Latent angle ``phi = atan2(z2 - c2, z1 - c1)`` in (-pi, pi].
    3. For each orientation ``s`` in {+1, -1} (the ring may run either way round): unit-slope
       fit ``theta ~ s * phi + b`` with the offset ``b`` the circular mean of
       ``theta - s * phi`` (the circular analogue of the OLS intercept: it minimises
       ``sum(1 - cos(residual))``), residuals wrapped into (-pi, pi].
    4. If ``fit_slope``: OLS refinement ``theta_lift ~ m * phi + b'``, where ``theta_lift`` is
       the joint angle moved by multiples of 2 pi to the branch nearest the unit-slope
       prediction. The unit-slope fit is one candidate of this OLS and its lifted residuals
       equal its wrapped ones, so the refinement never increases the mean squared wrapped
       error. For a ring ``m`` is close to ``s``; ``|m|`` far from 1 signals a non-ring loop.
    5. Error: mean over N of ``|wrap(theta - prediction)|``, in [0, pi]; the orientation with
       the smaller error wins.

    Why not the paper's ``arcsin(z2 / r)`` (App. B.3): arcsin maps the two halves of the ring
    (``z1 > 0`` and ``z1 < 0``) onto the same range [-pi/2, pi/2], so it cannot tell angles
    ``a`` and ``pi - a`` apart and a linear fit to the full [0, 2 pi) range is impossible
    (decision 8). The polar angle keeps the halves apart; the circular offset and the
    orientation replace the OLS intercept and the sign of the slope.

    Returns:
        ``{"error": float (rad), "error_unit_slope": float (rad, step 3 only),
        "slope": m (= s without refinement), "offset": b' in (-pi, pi], "orientation": s,
        "centre": (2,), "radius": float}``.
    """
    latents, angles = _check(latents, angles)
    if latents.shape[1] != 2:
        raise ValueError(
            f"polar_ols_error needs 2-d latents (N, 2), got {latents.shape}; "
            "use knn_angle_error for other latent sizes"
        )
    if len(latents) < 3:
        raise ValueError(f"polar_ols_error needs at least 3 points, got {len(latents)}")
    centre, radius = fit_circle(latents)
    phi = np.arctan2(latents[:, 1] - centre[1], latents[:, 0] - centre[0])

    best: dict[str, Any] | None = None
    for s in (1.0, -1.0):
        diff = angles - s * phi
        offset = float(np.arctan2(np.sin(diff).mean(), np.cos(diff).mean()))
        residual = wrap_angle(diff - offset)
        error_unit = float(np.abs(residual).mean())
        slope, intercept, error = s, offset, error_unit
        if fit_slope:
            lifted = s * phi + offset + residual
            slope, intercept = np.polyfit(phi, lifted, deg=1)
            error = float(np.abs(wrap_angle(angles - (slope * phi + intercept))).mean())
        if best is None or error < best["error"]:
            best = {
                "error": error,
                "error_unit_slope": error_unit,
                "slope": float(slope),
                "offset": float(wrap_angle(intercept)),
                "orientation": int(s),
                "centre": centre,
                "radius": radius,
            }
    assert best is not None
    return best


def knn_angle_error(
    latents: np.ndarray,
    angles: np.ndarray,
    k: int = 5,
    folds: int = 5,
    random_state: int = 0,
) -> float:
    """Cross-validated kNN "information" error of the joint angle (decision 8), radians.

    ``latents: (N, d)``, ``angles: (N,)``. A ``KNeighborsRegressor(k)`` predicts
    ``(cos theta, sin theta)`` from the latent; every point is predicted by the model fitted on
    the other folds (``KFold(folds, shuffle=True, random_state)``); the predicted angle is the
    ``atan2`` of the prediction. Returns the mean of ``|wrap(theta - predicted)|``, in [0, pi].
    Small whenever nearby latents have nearby angles, whatever the shape of the latent loop.
    """
    latents, angles = _check(latents, angles)
    n = len(latents)
    if folds < 2 or n < folds:
        raise ValueError(f"need 2 <= folds <= N, got folds={folds}, N={n}")
    smallest_train = n - int(np.ceil(n / folds))
    if not 1 <= k <= smallest_train:
        raise ValueError(f"k={k} must be in [1, smallest training-fold size {smallest_train}]")
    targets = np.column_stack([np.cos(angles), np.sin(angles)])
    cv = KFold(n_splits=folds, shuffle=True, random_state=random_state)
    predicted = cross_val_predict(KNeighborsRegressor(n_neighbors=k), latents, targets, cv=cv)
    predicted_angles = np.arctan2(predicted[:, 1], predicted[:, 0])
    return float(np.abs(wrap_angle(angles - predicted_angles)).mean())


def arcsin_ols_error(latents: np.ndarray, angles: np.ndarray) -> float:
    """The statistic of App. B.3 as written: OLS of the joint angle on arcsin(z2 / r), radians.

    ``latents: (N, 2)``, ``angles: (N,)``. The latents are centred on their mean, r is their mean
    distance from it, and theta ~ a * arcsin(clip(z2 / r, -1, 1)) + b is fitted by ordinary least
    squares; the result is the mean of |theta - prediction| (not wrapped: the OLS works on the
    angle as a number in [0, 2 pi), as the paper's Fig. 14 plots it).

    What it can see: whether z2 of a ring centred at its mean varies monotonically with the angle
    over a half-turn. What it cannot: arcsin folds the two halves of the ring onto one, so even a
    perfect ring leaves an error of the order of a radian over a full turn (a random latent gives
    about pi / 2); it depends on the ring's rotation in the plane, and a loop off its mean or not
    round is misread. ``polar_ols_error`` (decision 8) and ``knn_angle_error`` do not have these
    blind spots.
    """
    latents, angles = _check(latents, angles)
    centred = latents - latents.mean(axis=0)
    radius = float(np.linalg.norm(centred, axis=1).mean())
    x = np.arcsin(np.clip(centred[:, 1] / max(radius, 1e-12), -1.0, 1.0))
    design = np.column_stack([x, np.ones_like(x)])
    coef, *_ = np.linalg.lstsq(design, angles, rcond=None)
    return float(np.abs(angles - design @ coef).mean())


def latent_angle_report(latents: np.ndarray, angles: np.ndarray) -> dict[str, float]:
    """The three pendulum metrics, ready to log: ``latents: (N, 2)``, ``angles: (N,)`` radians.

    Returns ``{"arcsin_ols_error", "polar_ols_error", "knn_angle_error"}`` (radians, see the
    three functions) and ``"polar_slope"``, the refined OLS slope (close to +-1 for a ring).
    """
    polar = polar_ols_error(latents, angles)
    return {
        "arcsin_ols_error": arcsin_ols_error(latents, angles),
        "polar_ols_error": polar["error"],
        "knn_angle_error": knn_angle_error(latents, angles),
        "polar_slope": polar["slope"],
    }


@torch.no_grad()
def prior_fit_report(
    model: torch.nn.Module, latents: torch.Tensor, prior_samples: torch.Tensor
) -> dict[str, float]:
    """How well the learned prior covers the encoded data (the diagnostics of docs/pendulum.md).

    ``latents: (N, Dz)`` posterior means, ``prior_samples: (M, Dz)`` draws of z ~ p(z). Returns
    the radii about the centre of the encoded latents (``encoded_radius_mean/std``,
    ``prior_radius_mean/std``) and, for a two-layer model (``prior_encoder`` q(zeta|z),
    ``prior_decoder`` p(z|zeta)): ``q_zeta_spread``, the RMS over zeta-dims of the std over the
    data of q(zeta|z)'s mean (about 0 when the second layer ignores z: collapsed);
    ``p_z_mean_spread``, the same for p(z|zeta)'s mean over zeta ~ N(0, I); ``p_z_std``, the mean
    std of p(z|zeta) (the width of each prior component).
    """
    latents, prior_samples = latents.float(), prior_samples.float()
    centre = latents.mean(dim=0)
    enc_r = (latents - centre).norm(dim=1)
    prior_r = (prior_samples - centre).norm(dim=1)
    out = {
        "encoded_radius_mean": float(enc_r.mean()),
        "encoded_radius_std": float(enc_r.std()),
        "prior_radius_mean": float(prior_r.mean()),
        "prior_radius_std": float(prior_r.std()),
    }
    q_net, p_net = getattr(model, "prior_encoder", None), getattr(model, "prior_decoder", None)
    if q_net is None or p_net is None:
        return out
    param = next(model.parameters())
    mu_zeta, _ = q_net(latents.to(device=param.device, dtype=param.dtype))
    zeta = torch.randn(len(prior_samples), mu_zeta.shape[-1], device=param.device)
    mu_z, lv_z = p_net(zeta.to(param.dtype))
    out.update(
        q_zeta_spread=float(mu_zeta.float().var(dim=0).mean().sqrt()),
        p_z_mean_spread=float(mu_z.float().var(dim=0).mean().sqrt()),
        p_z_std=float((0.5 * lv_z.float()).exp().mean()),
    )
    return out


def prior_coverage(
    means: np.ndarray, stds: np.ndarray, prior: np.ndarray, chunk: int = 2**20
) -> dict[str, float]:
    """Whether the prior p(z) takes the shape of the encoded data (sec. 4.1, Fig. 2: a ring).

    ``means: (N, d)`` and ``stds: (N, d)`` of q(z|x) over the data, ``prior: (M, d)`` draws of
    z ~ p(z). Returns two numbers, each 0 for a prior that lies where the data is encoded:

    - ``prior_fit_nn``: the symmetric mean nearest-neighbour distance between the two point
      sets, ``(mean_j min_i |p_j - m_i| + mean_i min_j |m_i - p_j|) / 2``, divided by the mean
      radius ``mean_i |m_i - mean(m)|`` of the encoded means (so it is scale-free; ``inf`` when
      the means coincide and the prior does not). The first half is large for prior mass where
      no data is encoded, the second for encoded data the prior does not reach.
    - ``prior_outside_3std``: the fraction of prior samples outside every posterior's 3-std
      ellipse: ``p_j`` is inside when ``|(p_j - m_i) / s_i|_2 <= 3`` for some ``i`` (elementwise
      std ``s_i``), i.e. where the decoder was trained.

    The 3-std test runs over blocks of prior samples of about ``chunk`` (sample, mean) pairs.
    """
    means = np.asarray(means, dtype=np.float64)
    stds = np.asarray(stds, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    if means.ndim != 2 or len(means) < 1:
        raise ValueError(f"means must be a non-empty 2-d array (N, d), got shape {means.shape}")
    if stds.shape != means.shape:
        raise ValueError(f"stds must match means {means.shape}, got shape {stds.shape}")
    if prior.ndim != 2 or len(prior) < 1 or prior.shape[1] != means.shape[1]:
        raise ValueError(
            f"prior must be a non-empty (M, {means.shape[1]}) array (the latent size of means), "
            f"got shape {prior.shape}"
        )
    if not (np.isfinite(means).all() and np.isfinite(stds).all() and np.isfinite(prior).all()):
        raise ValueError("means, stds or prior contain NaN or inf")
    if (stds <= 0).any():
        raise ValueError("stds must be positive (posterior standard deviations)")
    chunk = positive_int("chunk", chunk)

    prior_to_data = NearestNeighbors(n_neighbors=1).fit(means).kneighbors(prior)[0]  # (M, 1)
    data_to_prior = NearestNeighbors(n_neighbors=1).fit(prior).kneighbors(means)[0]  # (N, 1)
    distance = 0.5 * (prior_to_data.mean() + data_to_prior.mean())
    radius = float(np.linalg.norm(means - means.mean(axis=0), axis=1).mean())
    fit_nn = distance / radius if radius > 0 else (math.inf if distance > 0 else 0.0)

    inside = np.zeros(len(prior), dtype=bool)
    step = max(1, chunk // len(means))
    for start in range(0, len(prior), step):
        block = prior[start : start + step]  # (C, d)
        scaled = (block[:, None, :] - means[None]) / stds[None]  # (C, N, d)
        inside[start : start + step] = ((scaled**2).sum(axis=-1) <= 9.0).any(axis=1)
    return {"prior_fit_nn": float(fit_nn), "prior_outside_3std": float(1.0 - inside.mean())}


def loop_shape(latents: np.ndarray) -> dict[str, float]:
    """How round the encoded loop is, ``latents: (N, 2)`` (a ring scores 1 and 0).

    ``loop_axis_ratio``: sqrt of the ratio of the smaller to the larger eigenvalue of the
    latents' covariance (1 for a ring, b / a for an ellipse with semi-axes a >= b, about 0 for
    a line); ``loop_radius_cv``: the std over the mean of the distances from the latents' mean
    (0 for a centred ring, larger for a folded or flattened loop).
    """
    latents = np.asarray(latents, dtype=np.float64)
    if latents.ndim != 2 or latents.shape[1] != 2 or len(latents) < 3:
        raise ValueError(f"latents must be (N >= 3, 2), got shape {latents.shape}")
    centred = latents - latents.mean(axis=0)
    low, high = np.linalg.eigvalsh(np.cov(centred.T))  # ascending
    radius = np.linalg.norm(centred, axis=1)
    return {
        "loop_axis_ratio": float(np.sqrt(max(low, 0.0) / high)) if high > 0 else 0.0,
        "loop_radius_cv": float(radius.std() / radius.mean()) if radius.mean() > 0 else 0.0,
    }


# --- Table 1's metrics: functions of one snapshot of the latent space ----------------------------
@dataclass(frozen=True)
class LatentSnapshot:
    """The latent space at one step, as every Table 1 metric reads it.

    ``means: (N, d)`` and ``stds: (N, d)`` of q(z|x) over the evaluation split, ``angles: (N,)``
    its joint angles in radians, ``prior: (M, d)`` draws z ~ p(z), and the ``model`` (in eval
    mode) for metrics that look inside the prior's networks.
    """

    means: np.ndarray
    stds: np.ndarray
    angles: np.ndarray
    prior: np.ndarray
    model: torch.nn.Module


def angle_metrics(snap: LatentSnapshot) -> dict[str, float]:
    """``latent_angle_report`` of the posterior means: the arcsin, polar and kNN errors and the
    polar slope (decision 8)."""
    return latent_angle_report(snap.means, snap.angles)


def posterior_noise_metrics(snap: LatentSnapshot) -> dict[str, float]:
    """``knn_sample_error``: the kNN error read through the posterior's noise, on one
    z ~ q(z|x) per image (fixed draw, seed 0) -- about pi/2 while q(z|x) is collapsed, even when
    its means alone still order the angles; ``posterior_std``: the mean posterior std."""
    noise = np.random.default_rng(0).standard_normal(snap.means.shape)  # (N, d)
    return {
        "knn_sample_error": knn_angle_error(snap.means + snap.stds * noise, snap.angles),
        "posterior_std": float(snap.stds.mean()),
    }


def loop_shape_metrics(snap: LatentSnapshot) -> dict[str, float]:
    """``loop_shape`` of the posterior means (not in the default list; add it by name)."""
    return loop_shape(snap.means)


def prior_shape_metrics(snap: LatentSnapshot) -> dict[str, float]:
    """Whether p(z) takes the shape of the encoded data: ``prior_fit_report`` (radii, the second
    layer's spreads; its zeta draws seeded with 0 in a forked RNG) and ``prior_coverage``."""
    with forked_rng(model_device(snap.model)):
        torch.manual_seed(0)
        fit = prior_fit_report(snap.model, *map(torch.from_numpy, (snap.means, snap.prior)))
    return {**fit, **prior_coverage(snap.means, snap.stds, snap.prior)}
