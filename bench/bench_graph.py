"""Time the graph-based interpolation (sec. 2.3): kNN graph + one A* path, App. F sizes.

Run: ``.venv/bin/python bench/bench_graph.py`` (a few seconds). Prints a markdown table of the
median over ``--repeats`` runs (``time.perf_counter``) for 2-d (pendulum, CMU) and 32-d
(Faces, Chairs, MNIST) latents. Nodes are standard-normal samples, a stand-in for prior samples.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from vhp_lightning.analysis.graph import build_graph, shortest_path


def bench(dim: int, n_nodes: int, n_neighbors: int, repeats: int, seed: int = 0) -> dict:
    """Median seconds of ``build_graph`` and of ``shortest_path`` over ``repeats`` runs."""
    rng = np.random.default_rng(seed)
    build, search, hops = [], [], []
    for _ in range(repeats):
        nodes = rng.standard_normal((n_nodes, dim))
        start, goal = rng.standard_normal(dim), rng.standard_normal(dim)
        t0 = time.perf_counter()
        graph = build_graph(nodes, n_neighbors)
        t1 = time.perf_counter()
        path = shortest_path(graph, nodes, start, goal, n_neighbors)
        t2 = time.perf_counter()
        build.append(t1 - t0)
        search.append(t2 - t1)
        hops.append(len(path.points))
    return {
        "build": statistics.median(build),
        "search": statistics.median(search),
        "total": statistics.median(b + s for b, s in zip(build, search, strict=True)),
        "points": statistics.median(hops),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--neighbors", type=int, default=18)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 32])
    parser.add_argument(
        "--threads", type=int, default=None, help="limit BLAS/OpenMP threads (default: all)"
    )
    args = parser.parse_args()
    with threadpool_limits(args.threads):
        run(args)


def run(args: argparse.Namespace) -> None:

    bench(2, 100, 5, repeats=2)  # warm-up: imports, first-call overheads
    print(
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"threads {args.threads or 'all'}, median of {args.repeats}\n"
    )
    print(
        "| latent dim | nodes | neighbours | build graph (ms) | A* path (ms) | total (ms) "
        "| path points |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for dim in args.dims:
        r = bench(dim, args.nodes, args.neighbors, args.repeats)
        print(
            f"| {dim} | {args.nodes} | {args.neighbors} | {1e3 * r['build']:.1f} "
            f"| {1e3 * r['search']:.1f} | {1e3 * r['total']:.1f} | {r['points']:.0f} |"
        )


if __name__ == "__main__":
    main()
