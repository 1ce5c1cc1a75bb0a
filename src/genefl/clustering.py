"""Stage 0: PACFL signatures and clustering (Vahidian et al., AAAI 2023).

A client summarises its data by the top-p left singular vectors U (d, p) of its data matrix
X (d features x n samples); two clients are as far apart as the mean principal angle between their
subspaces. Agglomerative clustering (average linkage) on that distance matrix groups the clients,
either into a fixed number K of clusters or by cutting the dendrogram at `beta` degrees.

Choices: the SVD is exact (`torch.linalg.svd` on the thin side) when the matrix is small, and a
seeded randomized SVD otherwise; p is clamped to min(d, n); signs of singular vectors do not matter.
"""

from __future__ import annotations

import numpy as np
import torch

EXACT_SVD_LIMIT = 4_000_000  # entries of X below which the exact SVD is cheap enough


def signature(x: torch.Tensor, p: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Top-p left singular vectors (d, p) of X = x flattened to (d features, n samples)."""
    data = x.reshape(len(x), -1).T.double().cpu()  # (d, n)
    p = max(1, min(p, *data.shape))
    if data.numel() <= EXACT_SVD_LIMIT:
        u, _, _ = torch.linalg.svd(data, full_matrices=False)
        return u[:, :p].float()
    # Randomized range finder (Halko et al. 2011) with a seeded Gaussian sketch.
    sketch = torch.randn(data.shape[1], p + 10, generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(data @ sketch)  # (d, p + 10)
    for _ in range(2):  # power iterations sharpen the spectrum
        q, _ = torch.linalg.qr(data @ (data.T @ q))
    u_small, _, _ = torch.linalg.svd(q.T @ data, full_matrices=False)
    return (q @ u_small)[:, :p].float()


def principal_angles(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """Principal angles in degrees between span(u1) and span(u2), both with orthonormal columns."""
    cosines = torch.linalg.svdvals(u1.double().T @ u2.double()).clamp(0.0, 1.0)
    return torch.rad2deg(torch.arccos(cosines))


def proximity_matrix(signatures: list[torch.Tensor]) -> torch.Tensor:
    """A[i, j] = mean principal angle (degrees) between clients i and j; symmetric, zero diagonal."""
    u = torch.stack([s.double() for s in signatures])  # (m, d, p)
    m, d, p = u.shape
    flat = u.transpose(1, 2).reshape(m * p, d)  # every client's p basis vectors as rows
    angles = torch.empty(m, m, dtype=torch.float64)
    # U_i^T U_j for all pairs from one Gram matrix, a block of rows at a time: memory stays
    # O(block * m * p^2) instead of materialising (m, m, p, d) broadcasts (31 GB at m = 1000).
    block = max(1, 4096 // p)
    for start in range(0, m, block):
        rows = flat[start * p : (start + block) * p]  # (b * p, d)
        b = rows.shape[0] // p
        gram = (rows @ flat.T).reshape(b, p, m, p).permute(0, 2, 1, 3)  # (b, m, p, p)
        cosines = torch.linalg.svdvals(gram)  # (b, m, p)
        angles[start : start + b] = torch.rad2deg(torch.arccos(cosines.clamp(0.0, 1.0))).mean(dim=-1)
    angles = (angles + angles.T) / 2
    angles.fill_diagonal_(0.0)
    return angles


def cluster(distances: torch.Tensor, num_clusters: int = 0, beta: float = 35.0) -> list[int]:
    """Average-linkage agglomerative clustering; labels 0..K-1 in order of first appearance."""
    # scipy is imported here, not at module level: only the server clusters, and every Flower
    # ClientApp process would otherwise pay ~0.5 s importing it
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    m = distances.shape[0]
    if m == 1:
        return [0]
    tree = linkage(squareform(distances.double().numpy(), checks=False), method="average")
    if num_clusters > 0:
        raw = fcluster(tree, t=min(num_clusters, m), criterion="maxclust")
    else:
        raw = fcluster(tree, t=beta, criterion="distance")
    order: dict[int, int] = {}
    return [order.setdefault(int(r), len(order)) for r in raw]


def nearest_cluster(sig: torch.Tensor, member_signatures: list[torch.Tensor], labels: list[int]) -> int:
    """The cluster whose members are, on average, at the smallest mean principal angle from `sig`."""
    dist = np.array([float(principal_angles(sig, s).mean()) for s in member_signatures])
    labels_arr = np.asarray(labels)
    clusters = sorted(set(labels))
    means = [dist[labels_arr == k].mean() for k in clusters]
    return clusters[int(np.argmin(means))]
