"""Every pair's mean principal angle at cross-device scale, in compiled code.

The exact clustering needs, for every pair of m clients, the p singular values of U_i^T U_j (p x p,
p = 5): 50 million small matrices at m = 10,000. Batched LAPACK (`torch.linalg.svdvals`, what
`clustering.proximity_matrix` uses up to COMPILED_ABOVE clients) spends about 2 µs of CPU on each,
most of it per-call overhead, and took both triangles: about 10 minutes of one core at 10,000.
Here a Gram block comes from one BLAS product (float64), and each pair of the upper triangle takes
the eigenvalues of M = G^T G (the squared cosines) by Householder tridiagonalisation and implicit
QL, eigenvalues only (`tred2` / `tqli`, Numerical Recipes 3rd ed., sections 11.3-11.4), compiled by
numba: about 1.1 µs of CPU a pair, the rows of a block spread over as many threads as torch is
allowed (`torch.get_num_threads()`, so `OMP_NUM_THREADS=1` keeps it to one core). Measured on 2 cores:
10,000 random 5-dimensional subspaces of R^60 in 30 s (benchmarks/clustering_scale.py states the
Synthetic(1, 1) figures). The angles agree with the LAPACK path to about 1e-9 degrees
(tests/test_clustering.py), so the clustering they give is the same.

`clustering.proximity_matrix` imports this module (and with it numba, about 0.3 s) only above
COMPILED_ABOVE clients: clients, and servers of small populations, never load it. numba compiles
the kernel on first use (a few seconds) and caches it on disk where it can write. Results do not
depend on the thread count (each pair is computed alone).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numba import njit

BLOCK_CLIENTS = 64  # clients whose Gram rows are held at once: 64 x 5 x 50,000 float64 = 128 MB at m = 10,000
EPS = float(np.finfo(np.float64).eps)


def mean_angle_matrix(signatures: torch.Tensor) -> np.ndarray:
    """A[i, j] = mean principal angle in degrees between span(U_i) and span(U_j) for the stacked
    orthonormal bases `signatures` (m, d, p); symmetric, float64, zero diagonal."""
    m, d, p = signatures.shape
    flat = signatures.double().transpose(1, 2).reshape(m * p, d).contiguous()  # each basis' columns as rows
    angles = np.zeros((m, m))
    threads = max(1, torch.get_num_threads())
    # Our own threads, not numba's parallel layer: its OpenMP workers spin after every parallel region
    # and took a core from the rest of the run (a GENE-FL round after it at 10,000 clients cost 5.5x
    # the CPU of one at 1,000).
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, m, BLOCK_CLIENTS):
            gram = (flat[start * p : (start + BLOCK_CLIENTS) * p] @ flat[start * p :].T).numpy()  # torch's BLAS threads
            out = np.zeros((len(gram) // p, m - start))  # (b, m - start): block i's clients against client start + j
            list(pool.map(lambda t: _rows(gram, p, out, t, threads), range(threads)))  # rows t, t + threads, ...
            b, end = len(out), start + len(out)
            angles[start:end, start:end] = out[:, :b] + out[:, :b].T  # the kernel fills j > i only
            angles[start:end, end:] = out[:, b:]
            angles[end:, start:end] = out[:, b:].T
    return angles


@njit(cache=True)
def _eigvalsh_small(z, d, e, n):  # checked against LAPACK in tests/test_clustering.py
    """Eigenvalues into d of the symmetric n x n matrix z (overwritten); e is scratch."""
    for i in range(n - 1, 0, -1):  # Householder reduction to tridiagonal form (tred2, no vectors)
        l = i - 1
        h = 0.0
        scale = 0.0
        if l > 0:
            for k in range(i):
                scale += abs(z[i, k])
            if scale == 0.0:
                e[i] = z[i, l]
            else:
                for k in range(i):
                    z[i, k] /= scale
                    h += z[i, k] * z[i, k]
                f = z[i, l]
                g = -math.sqrt(h) if f >= 0.0 else math.sqrt(h)
                e[i] = scale * g
                h -= f * g
                z[i, l] = f - g
                f = 0.0
                for j in range(i):
                    g = 0.0
                    for k in range(j + 1):
                        g += z[j, k] * z[i, k]
                    for k in range(j + 1, i):
                        g += z[k, j] * z[i, k]
                    e[j] = g / h
                    f += e[j] * z[i, j]
                hh = f / (h + h)
                for j in range(i):
                    f = z[i, j]
                    g = e[j] - hh * f
                    e[j] = g
                    for k in range(j + 1):
                        z[j, k] -= f * e[k] + g * z[i, k]
        else:
            e[i] = z[i, l]
    for i in range(n):
        d[i] = z[i, i]
    for i in range(1, n):
        e[i - 1] = e[i]
    e[n - 1] = 0.0
    for l in range(n):  # implicit QL with Wilkinson-type shifts (tqli, no vectors)
        for _ in range(60):
            m = l
            while m < n - 1:
                if abs(e[m]) <= EPS * (abs(d[m]) + abs(d[m + 1])):
                    break
                m += 1
            if m == l:
                break
            g = (d[l + 1] - d[l]) / (2.0 * e[l])
            r = math.sqrt(g * g + 1.0)  # |g| <= 1/eps here (entries are cosines): no overflow, so no hypot
            g = d[m] - d[l] + e[l] / (g + (r if g >= 0.0 else -r))
            s = 1.0
            c = 1.0
            p = 0.0
            underflow = False
            i = m - 1
            while i >= l:
                f = s * e[i]
                b = c * e[i]
                r = math.sqrt(f * f + g * g)
                e[i + 1] = r
                if r == 0.0:
                    d[i + 1] -= p
                    e[m] = 0.0
                    underflow = True
                    break
                s = f / r
                c = g / r
                g = d[i + 1] - p
                r = (d[i] - g) * s + 2.0 * c * b
                p = s * r
                d[i + 1] = g + p
                g = c * r - b
                i -= 1
            if underflow:
                continue
            d[l] -= p
            e[l] = g
            e[m] = 0.0


@njit(cache=True)
def _mean_angle(gram, r0, c0, p, z, d, e):
    """Mean principal angle (degrees) of the pair whose G = gram[r0:r0+p, c0:c0+p]."""
    for a in range(p):
        for c in range(a, p):
            s = 0.0
            for k in range(p):
                s += gram[r0 + k, c0 + a] * gram[r0 + k, c0 + c]
            z[a, c] = s
            z[c, a] = s
    _eigvalsh_small(z, d, e, p)
    total = 0.0
    for a in range(p):
        total += math.acos(math.sqrt(min(max(d[a], 0.0), 1.0)))
    return total / p * (180.0 / math.pi)


@njit(cache=True, nogil=True)
def _rows(gram, p, out, first, step):
    """out[i, j] for j > i, for the rows i = first, first + step, ... (one thread's share, GIL released)."""
    z = np.empty((p, p))
    d = np.empty(p)
    e = np.empty(p)
    for i in range(first, out.shape[0], step):
        for j in range(i + 1, out.shape[1]):
            out[i, j] = _mean_angle(gram, i * p, j * p, p, z, d, e)
