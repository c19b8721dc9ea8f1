"""The two halves of every "% of peak" in the benchmarks: FLOPs counted and a sgemm peak measured.

* ``sgemm_peak_gflops``: the best float32 ``n x n`` matmul rate of *this* process (its threads,
  its core, the load of the moment), so that a fraction of it compares like with like;
* ``counted_flops``: the matmul/convolution FLOPs of one call (forward, and backward if it runs
  one), by ``torch.utils.flop_counter.FlopCounterMode``. Elementwise work (activations,
  log-densities, the optimiser) is not counted: it is what keeps a step below the peak.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def sgemm_peak_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    """Best float32 ``n x n`` matmul rate over ~``seconds`` (2 n^3 FLOPs each), in GFLOP/s.

    The best of many short calls: a call that lost its core to another process is discarded.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = a @ b  # warm-up, and the output buffer
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def counted_flops(fn: Callable[[], object]) -> float:
    """Matmul/convolution FLOPs of one call of ``fn`` (its backward included if it runs one).

    Imported here, not at the top: ``torch.utils.flop_counter`` adds ~100 MiB of resident memory
    (``torch._subclasses``, sympy), which would count in a benchmark's peak RSS.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())
