"""Graph-based interpolation along the learned latent manifold (sec. 2.3, decision 10).

The recipe of sec. 2.3, one function per step:

1. ``build_graph``: N nodes sampled from the prior (eq. 13), each joined by undirected edges to
   its k nearest neighbours, edge weight = Euclidean distance in the latent space.
2. ``add_endpoints``: the posterior means of the two data points become two new nodes.
3. ``shortest_path``: A* with the Euclidean distance to the goal as heuristic (admissible, so it
   returns a shortest path, the same length as Dijkstra's, only faster).
4. ``interpolate``: the whole recipe for a model; decodes the path to the observable space.

``smoothness_factor`` is the movement-smoothness measure of sec. 4.2 (Fig. 7). Plots live in
``vhp_lightning.analysis.figures``. Defaults (App. F): pendulum 1000 nodes / 18 neighbours,
CMU 2530 / 15, Faces and Chairs 10000 / 18.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import networkx as nx
import numpy as np
import torch
from sklearn.neighbors import kneighbors_graph
from torch import nn


class DisconnectedGraphError(RuntimeError):
    """The two endpoints of an interpolation lie in different connected components."""


class GraphPath(NamedTuple):
    """A shortest path through the latent graph.

    Attributes:
        points: ``(P, d)`` latents ``(z_start, Z_sub, z_goal)`` in path order (sec. 2.3).
        node_indices: ``(P - 2,)`` indices into ``nodes`` of the intermediate nodes ``Z_sub``.
        length: sum of the Euclidean lengths of the path's ``P - 1`` edges.
    """

    points: np.ndarray
    node_indices: np.ndarray
    length: float


@dataclass
class InterpolationResult:
    """Everything ``interpolate`` computed, as numpy arrays.

    Attributes:
        nodes: ``(N, d)`` prior samples, the graph's nodes.
        path: ``(P, d)`` latents along the path, the posterior means at both ends.
        node_indices: ``(P - 2,)`` indices into ``nodes`` of the path's inner nodes.
        decoded: ``(P, D)`` E[x|z] for each latent on the path (flattened data).
        graph: the k-nearest-neighbour graph over ``nodes`` (endpoints not included).
        smoothness: ``smoothness_factor(decoded)``.
    """

    nodes: np.ndarray
    path: np.ndarray
    node_indices: np.ndarray
    decoded: np.ndarray
    graph: nx.Graph
    smoothness: dict[str, Any]


def _check_points(name: str, points: np.ndarray, ndim: int) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != ndim:
        shape = "(N, d)" if ndim == 2 else "(d,)"
        raise ValueError(f"{name} must be a {ndim}-d array {shape}, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"{name} contains NaN or inf; check the model's latents")
    return points


def _check_neighbors(n_neighbors: int, n_nodes: int) -> None:
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)):
        raise TypeError(f"n_neighbors must be an int, got {n_neighbors!r}")
    if not 1 <= n_neighbors < n_nodes:
        raise ValueError(
            f"n_neighbors must be in [1, N - 1] = [1, {n_nodes - 1}], got {n_neighbors}; "
            "sample more nodes or use fewer neighbours"
        )


def build_graph(nodes: np.ndarray, n_neighbors: int) -> nx.Graph:
    """The k-nearest-neighbour graph of sec. 2.3 over ``nodes: (N, d)``.

    Node ``i`` is row ``i`` of ``nodes``. Every node is joined by an undirected edge to each of
    its ``n_neighbors`` nearest other nodes, so the edge set is the symmetrised kNN relation
    (``max(A, A^T)`` of scikit-learn's ``kneighbors_graph``) and a node can have more than k
    edges. Edge attribute ``"weight"`` is the exact Euclidean distance ``||z_i - z_j||``. (The
    weights are recomputed from the connectivity matrix rather than read from a sparse distance
    matrix, because scipy drops stored zeros: duplicate nodes would lose their edge.)

    Raises:
        ValueError: ``nodes`` is not a finite 2-d array, or not ``1 <= n_neighbors < N``.
    """
    nodes = _check_points("nodes", nodes, ndim=2)
    _check_neighbors(n_neighbors, len(nodes))
    adjacency = kneighbors_graph(nodes, n_neighbors, mode="connectivity", include_self=False)
    adjacency = adjacency.maximum(adjacency.T).tocoo()
    upper = adjacency.row < adjacency.col
    rows, cols = adjacency.row[upper], adjacency.col[upper]
    weights = np.linalg.norm(nodes[rows] - nodes[cols], axis=1)
    graph = nx.Graph()
    graph.add_nodes_from(range(len(nodes)))
    graph.add_weighted_edges_from(zip(rows.tolist(), cols.tolist(), weights.tolist(), strict=True))
    return graph


def add_endpoints(
    graph: nx.Graph,
    nodes: np.ndarray,
    start: np.ndarray,
    goal: np.ndarray,
    n_neighbors: int,
    copy: bool = True,
) -> tuple[nx.Graph, int, int]:
    """Add ``start`` and ``goal`` (each ``(d,)``) as new nodes (sec. 2.3).

    Each endpoint is joined to its ``n_neighbors`` nearest nodes of ``nodes: (N, d)`` (never to
    the other endpoint, so every path passes through at least one prior sample and has
    ``P >= 3`` points). Weights are Euclidean distances. With ``copy=False`` the nodes are
    added to ``graph`` itself (no copy of the whole graph; remove nodes N and N + 1 afterwards).

    Returns:
        ``(augmented_graph, start_id, goal_id)`` with ``start_id = N`` and ``goal_id = N + 1``.
    """
    nodes = _check_points("nodes", nodes, ndim=2)
    start, goal = _check_points("start", start, ndim=1), _check_points("goal", goal, ndim=1)
    n, d = nodes.shape
    if start.shape != (d,) or goal.shape != (d,):
        raise ValueError(
            f"start and goal must have the nodes' dimension ({d},), "
            f"got {start.shape} and {goal.shape}"
        )
    if graph.number_of_nodes() != n:
        raise ValueError(
            f"graph has {graph.number_of_nodes()} nodes but nodes has {n} rows; "
            "pass the array the graph was built from"
        )
    _check_neighbors(n_neighbors, n + 1)
    augmented = graph.copy() if copy else graph
    start_id, goal_id = n, n + 1
    for node_id, point in ((start_id, start), (goal_id, goal)):
        dist = np.linalg.norm(nodes - point, axis=1)
        nearest = np.argpartition(dist, n_neighbors - 1)[:n_neighbors]
        augmented.add_node(node_id)
        augmented.add_weighted_edges_from(
            (node_id, int(j), float(dist[j])) for j in nearest.tolist()
        )
    return augmented, start_id, goal_id


def _disconnected_message(graph: nx.Graph, start_id: int, goal_id: int) -> str:
    components = sorted(nx.connected_components(graph), key=len, reverse=True)
    where = {node: i for i, comp in enumerate(components) for node in comp}
    sizes = ", ".join(str(len(c)) for c in components[:10])
    more = ", ..." if len(components) > 10 else ""
    return (
        f"No path between the endpoints: the latent graph (with the endpoints added) has "
        f"{len(components)} connected components (sizes, largest first: {sizes}{more}); "
        f"the start is in component {where[start_id]} "
        f"({len(components[where[start_id]])} nodes) and the goal in component "
        f"{where[goal_id]} ({len(components[where[goal_id]])} nodes). "
        "Sample more nodes (n_nodes) or connect more neighbours (n_neighbors)."
    )


def shortest_path(
    graph: nx.Graph,
    nodes: np.ndarray,
    start: np.ndarray,
    goal: np.ndarray,
    n_neighbors: int,
) -> GraphPath:
    """Shortest path from ``start: (d,)`` to ``goal: (d,)`` through ``graph`` (sec. 2.3).

    The endpoints are added as new nodes (``add_endpoints``) and the path is found with
    ``networkx.astar_path`` on ``weight="weight"`` with the Euclidean distance to the goal as
    heuristic. That heuristic never overestimates (edge weights are Euclidean lengths), so the
    path is a shortest one, as with Dijkstra (decision 10). The endpoints are added to
    ``graph`` in place and removed again before returning (copying the graph would cost more
    than the search), so do not share one graph between threads.

    Returns:
        ``GraphPath(points (P, d), node_indices (P - 2,), length)``.

    Raises:
        DisconnectedGraphError: the endpoints lie in different connected components.
    """
    augmented, start_id, goal_id = add_endpoints(graph, nodes, start, goal, n_neighbors, copy=False)
    positions = np.concatenate([np.asarray(nodes, dtype=np.float64), [start, goal]])

    def heuristic(u: int, v: int) -> float:
        return float(np.linalg.norm(positions[u] - positions[v]))

    try:
        ids = nx.astar_path(augmented, start_id, goal_id, heuristic=heuristic, weight="weight")
    except nx.NetworkXNoPath:
        message = _disconnected_message(augmented, start_id, goal_id)
        raise DisconnectedGraphError(message) from None
    finally:
        augmented.remove_nodes_from([start_id, goal_id])
    points = positions[ids]
    length = float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())
    return GraphPath(
        points=points, node_indices=np.asarray(ids[1:-1], dtype=np.int64), length=length
    )


def smoothness_factor(path_outputs: np.ndarray) -> dict[str, Any]:
    """Movement smoothness of an interpolation (sec. 4.2, Fig. 7); smaller is smoother.

    ``path_outputs: (P, ...)`` are the P decoded points along the path (``(P, D)`` motion
    vectors, or ``(P, H, W)`` images, flattened to ``(P, D)``). With the second-order finite
    difference along the path ``a_t = x_{t+1} - 2 x_t + x_{t-1}``, ``t = 1 .. P-2``:

    Returns:
        ``{"per_dim": (D,) RMS over t of a_t per dimension (per joint in Fig. 7),
        "mean": float, the mean of per_dim over the D dimensions}``.

    Raises:
        ValueError: fewer than 3 points (no second difference), or non-finite values.
    """
    x = np.asarray(path_outputs, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"path_outputs must be (P, D) or (P, H, W), got shape {x.shape}")
    if len(x) < 3:
        raise ValueError(
            f"The smoothness factor needs a path of at least 3 points, got {len(x)}; "
            "a second-order finite difference is undefined on shorter paths"
        )
    if not np.isfinite(x).all():
        raise ValueError("path_outputs contains NaN or inf")
    x = x.reshape(len(x), -1)
    second_diff = x[2:] - 2.0 * x[1:-1] + x[:-2]  # (P - 2, D)
    per_dim = np.sqrt(np.mean(second_diff**2, axis=0))
    return {"per_dim": per_dim, "mean": float(per_dim.mean())}


@torch.no_grad()
def interpolate(
    model: Any,
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    n_nodes: int = 1000,
    n_neighbors: int = 18,
    seed: int | None = None,
) -> InterpolationResult:
    """Graph-based interpolation between two data points with a trained model (sec. 2.3).

    ``model`` needs ``sample_prior(n) -> (n, d)``, ``encode(x) -> (mean, logvar)`` and
    ``decode(z: (B, d)) -> (B, D)`` (``vhp_lightning.models``). Samples ``n_nodes`` nodes from
    the prior (eq. 13), encodes ``x_a`` and ``x_b`` (each one data point, ``(*data_shape)``)
    by their posterior means, finds the shortest path (A*) and decodes it. Runs in eval mode
    under ``torch.no_grad``; a module's training mode is restored afterwards. ``seed`` makes the
    node sampling reproducible without touching the global RNG state.

    Raises:
        DisconnectedGraphError: see ``shortest_path``.
    """
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        with torch.random.fork_rng(enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            z_nodes = model.sample_prior(n_nodes)
        x = torch.stack([torch.as_tensor(x_a), torch.as_tensor(x_b)]).to(z_nodes.device)
        z_ends = model.encode(x)[0].reshape(2, -1)
        if z_ends.shape[1] != z_nodes.shape[1]:
            raise ValueError(
                f"Each of x_a, x_b must be one data point: encoding them gave {z_ends.shape[1]} "
                f"latent values per point, the prior has {z_nodes.shape[1]}"
            )
        nodes = z_nodes.double().cpu().numpy()
        ends = z_ends.double().cpu().numpy()
        graph = build_graph(nodes, n_neighbors)
        path = shortest_path(graph, nodes, ends[0], ends[1], n_neighbors)
        z_path = torch.as_tensor(path.points, dtype=z_nodes.dtype, device=z_nodes.device)
        decoded = model.decode(z_path).reshape(len(z_path), -1).double().cpu().numpy()
    finally:
        if was_training:
            model.train()
    return InterpolationResult(
        nodes=nodes,
        path=path.points,
        node_indices=path.node_indices,
        decoded=decoded,
        graph=graph,
        smoothness=smoothness_factor(decoded),
    )
