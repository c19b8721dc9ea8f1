"""Graph-based interpolation (sec. 2.3) and the smoothness factor (sec. 4.2) on known geometry."""

from __future__ import annotations

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from vhp_lightning.analysis.figures import plot_graph_path, plot_image_strip, plot_latents
from vhp_lightning.analysis.graph import (
    DisconnectedGraphError,
    InterpolationResult,
    add_endpoints,
    build_graph,
    interpolate,
    shortest_path,
    smoothness_factor,
)

GAP = 0.15 * np.pi  # the horse-shoe covers angles [GAP, 2 pi - GAP]; the opening is at angle 0


def horse_shoe(n: int = 500, seed: int = 0) -> np.ndarray:
    """``(n, 2)`` points densely along the unit circle minus an opening around angle 0."""
    rng = np.random.default_rng(seed)
    t = (np.arange(n) + rng.uniform(size=n)) / n
    angle = GAP + t * (2 * np.pi - 2 * GAP)
    radius = 1 + 1e-3 * rng.standard_normal(n)
    return np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])


def on_circle(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])


# --- build_graph ------------------------------------------------------------------------------
def test_graph_is_undirected_knn_with_euclidean_weights():
    nodes = np.random.default_rng(1).standard_normal((200, 3))
    k = 6
    graph = build_graph(nodes, k)
    assert isinstance(graph, nx.Graph) and not graph.is_directed()
    assert graph.number_of_nodes() == 200
    assert min(d for _, d in graph.degree()) >= k
    for u, v, w in graph.edges(data="weight"):
        assert w == pytest.approx(np.linalg.norm(nodes[u] - nodes[v]), abs=1e-12)
    # Every node is joined to its k nearest neighbours.
    dist = np.linalg.norm(nodes[:, None] - nodes[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    for i in range(0, 200, 17):
        assert set(np.argsort(dist[i])[:k]) <= set(graph.neighbors(i))


def test_graph_keeps_duplicate_nodes_connected():
    nodes = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    graph = build_graph(nodes, 1)
    assert graph.has_edge(0, 1) and graph[0][1]["weight"] == 0.0


@pytest.mark.parametrize(
    ("nodes", "k", "match"),
    [
        (np.zeros(10), 3, "2-d array"),
        (
            np.random.default_rng(0).standard_normal((5, 2)),
            5,
            r"n_neighbors must be in \[1, N - 1\]",
        ),
        (np.random.default_rng(0).standard_normal((5, 2)), 0, "n_neighbors"),
        (np.array([[0.0, 1.0], [np.nan, 0.0], [1.0, 1.0]]), 1, "NaN or inf"),
    ],
)
def test_build_graph_rejects_bad_input(nodes, k, match):
    with pytest.raises(ValueError, match=match):
        build_graph(nodes, k)


# --- shortest_path ----------------------------------------------------------------------------
def test_path_follows_the_horse_shoe_instead_of_cutting_across():
    nodes = horse_shoe()
    graph = build_graph(nodes, 8)
    start, goal = on_circle(GAP + 0.01), on_circle(-GAP - 0.01)  # 0.93 apart across the gap
    path = shortest_path(graph, nodes, start, goal, 8)

    np.testing.assert_array_equal(path.points[0], start)
    np.testing.assert_array_equal(path.points[-1], goal)
    np.testing.assert_array_equal(path.points[1:-1], nodes[path.node_indices])
    # The curve parameter (polar angle in [0, 2 pi)) increases monotonically along the path ...
    angle = np.mod(np.arctan2(path.points[:, 1], path.points[:, 0]), 2 * np.pi)
    assert np.all(np.diff(angle) > 0)
    # ... every step is short (no jump over the opening) and the length is the arc's.
    assert np.linalg.norm(np.diff(path.points, axis=0), axis=1).max() < 0.15
    arc = 2 * np.pi - 2 * GAP - 0.02
    assert path.length == pytest.approx(arc, rel=0.01)


@pytest.mark.parametrize("dim", [2, 5])
def test_astar_path_is_as_short_as_dijkstra(dim):
    rng = np.random.default_rng(dim)
    nodes = rng.standard_normal((300, dim))
    graph = build_graph(nodes, 7)
    for _ in range(5):
        start, goal = rng.standard_normal(dim), rng.standard_normal(dim)
        path = shortest_path(graph, nodes, start, goal, 7)
        augmented, s, g = add_endpoints(graph, nodes, start, goal, 7)
        assert path.length == pytest.approx(nx.dijkstra_path_length(augmented, s, g), rel=1e-12)
    assert graph.number_of_nodes() == 300  # the endpoints were removed again


def test_disconnected_graph_names_both_components():
    rng = np.random.default_rng(0)
    nodes = np.concatenate([rng.normal(0, 0.1, (60, 2)), rng.normal(10, 0.1, (40, 2))])
    graph = build_graph(nodes, 5)
    n_edges = graph.number_of_edges()
    with pytest.raises(DisconnectedGraphError) as info:
        shortest_path(graph, nodes, np.zeros(2), np.full(2, 10.0), 5)
    assert (graph.number_of_nodes(), graph.number_of_edges()) == (100, n_edges)  # unchanged
    message = str(info.value)
    assert "2 connected components" in message
    assert "start is in component 0 (61 nodes)" in message
    assert "goal in component 1 (41 nodes)" in message
    assert "n_neighbors" in message and "n_nodes" in message


def test_shortest_path_rejects_endpoint_of_wrong_dimension():
    nodes = horse_shoe(50)
    with pytest.raises(ValueError, match=r"nodes' dimension \(2,\)"):
        shortest_path(build_graph(nodes, 3), nodes, np.zeros(3), np.zeros(2), 3)


# --- smoothness_factor ------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [1, 2, 50])
def test_smoothness_of_an_evenly_spaced_line_is_zero(dim):
    rng = np.random.default_rng(dim)
    a, b = rng.standard_normal(dim), rng.standard_normal(dim)
    line = a + np.linspace(0, 1, 20)[:, None] * b
    result = smoothness_factor(line)
    assert result["per_dim"].shape == (dim,)
    assert result["mean"] < 1e-10


def test_smoothness_of_a_zig_zag_is_large():
    zig_zag = np.array([(-1.0) ** t for t in range(12)])[:, None] * np.ones((1, 3))
    result = smoothness_factor(zig_zag)  # second difference is +-4 at every step
    np.testing.assert_allclose(result["per_dim"], 4.0)
    assert result["mean"] == pytest.approx(4.0)


def test_smoothness_flattens_images_and_needs_three_points():
    images = np.random.default_rng(0).uniform(size=(5, 4, 4))
    assert smoothness_factor(images)["per_dim"].shape == (16,)
    with pytest.raises(ValueError, match="at least 3 points"):
        smoothness_factor(images[:2])


# --- interpolate with a stand-in model ----------------------------------------------------------
class RingModel(nn.Module):
    """Prior on the unit circle, encoder = identity on 2-d data, decoder = fixed linear map."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.arange(8.0).view(2, 4) / 8, requires_grad=False)

    def sample_prior(self, n: int) -> torch.Tensor:
        angle = 2 * torch.pi * torch.rand(n)
        return torch.stack([angle.cos(), angle.sin()], dim=1) * (1 + 0.01 * torch.randn(n, 1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert not self.training, "interpolate must put the model in eval mode"
        return x, torch.zeros_like(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight


def test_interpolate_end_to_end_on_a_ring():
    model = RingModel().train()
    x_a = torch.tensor([1.0, 0.0])
    x_b = torch.tensor([-1.0, 0.0])
    result = interpolate(model, x_a, x_b, n_nodes=400, n_neighbors=10, seed=3)

    assert isinstance(result, InterpolationResult)
    assert model.training  # mode restored
    assert result.nodes.shape == (400, 2)
    assert result.graph.number_of_nodes() == 400
    np.testing.assert_allclose(result.path[0], [1.0, 0.0])
    np.testing.assert_allclose(result.path[-1], [-1.0, 0.0])
    np.testing.assert_allclose(result.path[1:-1], result.nodes[result.node_indices])
    assert result.decoded.shape == (len(result.path), 4)
    np.testing.assert_allclose(result.decoded, result.path @ model.weight.numpy(), atol=1e-6)
    # Half-way round the ring, not through the middle: every point stays near radius 1.
    np.testing.assert_allclose(np.linalg.norm(result.path, axis=1), 1.0, atol=0.05)
    assert result.smoothness["per_dim"].shape == (4,)

    again = interpolate(model, x_a, x_b, n_nodes=400, n_neighbors=10, seed=3)
    np.testing.assert_array_equal(again.nodes, result.nodes)


# --- plots ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [2, 5])
def test_plot_graph_path_returns_a_figure(tmp_path, dim):
    rng = np.random.default_rng(0)
    nodes = rng.standard_normal((150, dim))
    graph = build_graph(nodes, 6)
    path = shortest_path(graph, nodes, nodes[0] + 0.01, nodes[1] - 0.01, 6)
    fig = plot_graph_path(nodes, graph, path.points, title="test")
    assert isinstance(fig, Figure)
    assert ("PCA" in fig.axes[0].get_title()) == (dim > 2)
    fig.savefig(tmp_path / "graph.png")
    plt.close(fig)
    assert (tmp_path / "graph.png").stat().st_size > 0


def test_plot_graph_path_colours_several_paths_as_fig5():
    rng = np.random.default_rng(0)
    nodes = rng.standard_normal((150, 2))
    graph = build_graph(nodes, 6)
    paths = [shortest_path(graph, nodes, nodes[i], nodes[i + 1], 6).points for i in range(5)]
    fig = plot_graph_path(nodes, graph, paths)
    colours = [line.get_color() for line in fig.axes[0].get_lines()[::2]]  # path, then its ends
    assert colours == ["black", "tab:orange", "red", "maroon", "black"]
    plt.close(fig)
    one = plot_graph_path(nodes, graph, paths[0])
    assert one.axes[0].get_lines()[0].get_color() == "red"
    plt.close(one)


def test_plot_image_strip_and_latents_return_figures(tmp_path):
    images = np.random.default_rng(0).uniform(size=(12, 256))
    fig = plot_image_strip(images, image_shape=(16, 16), title="strip", max_images=8)
    assert isinstance(fig, Figure) and len(fig.axes) == 8
    fig.savefig(tmp_path / "strip.png")
    plt.close(fig)
    fig = plot_latents(np.random.default_rng(1).standard_normal((50, 2)), np.linspace(0, 6, 50))
    assert isinstance(fig, Figure)
    fig.savefig(tmp_path / "latents.png")
    plt.close(fig)
    assert (tmp_path / "strip.png").stat().st_size > 0
    assert (tmp_path / "latents.png").stat().st_size > 0
    with pytest.raises(ValueError, match="image_shape"):
        plot_image_strip(images)
