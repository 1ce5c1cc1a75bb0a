"""Stage 0: PACFL signatures and clustering (Vahidian et al., AAAI 2023).

A client summarises its data by the top-p left singular vectors U (d, p) of its data matrix
X (d features x n samples); two clients are as far apart as the mean principal angle between their
subspaces. Agglomerative clustering (average linkage) on that distance matrix groups the clients,
either into a fixed number K of clusters or by cutting the dendrogram at `beta` degrees.

Choices: the SVD is exact (`torch.linalg.svd` on the thin side) when the matrix is small, and a
seeded randomized SVD otherwise; p is clamped to min(d, n); signs of singular vectors do not matter.

At scale (`clustering.method`): the exact clustering needs all m² angles and an O(m²) average
linkage. Above COMPILED_ABOVE (1,000) clients the angles come from the compiled kernel of
`angles.py` (numba; about 1.2 µs of CPU a pair with linkage, where LAPACK over both triangles
spent about 5.5): measured on 2 cores, 10,000 Synthetic(1, 1) clients cluster exactly in 35 s (30 s
of angles, the rest linkage), 2.5 GB at peak. "sampled" (the default) is exact up to
`clustering.sample` clients (10,000) and above clusters a seeded sample of s clients exactly
(`cluster_sampled`), then gives every other client the cluster at the smallest mean principal angle from it: average linkage's own criterion (the
mean distance to a cluster's members), and the rule a newcomer joins by (`nearest_cluster`). The
mean is taken over at most `ASSIGN_MEMBERS` seeded members per cluster (an unbiased estimate of it),
and only the `ASSIGN_CANDIDATES` clusters nearest by projection distance (one matrix product, no
SVD) are compared by angle, so the assignment costs at most (m - s) x ASSIGN_CANDIDATES x
ASSIGN_MEMBERS small SVDs, in blocks of bounded memory, however many clusters the sample has. A
single representative per cluster (a medoid) would be cheaper still, but is not the criterion the
clusters were built by. Where the clients form well-separated groups a small sample recovers them
exactly; where they do not, as on Synthetic(1, 1), a sample agrees poorly with the exact clustering
(at 10,000 clients, samples of 1,000 and 3,000: adjusted Rand index 0.63 and 0.60 cut at 35
degrees, 0.06 and 0.16 at K = 10), and the exact clustering itself moves when 1% of the clients are
left out (benchmarks/clustering_scale.py measures both): hence exact up to 10,000 by default.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from ..errors import GeneflError

EXACT_SVD_LIMIT = 4_000_000  # entries of X below which the exact SVD is cheap enough
ASSIGN_MEMBERS = 32  # members per cluster a client's mean angle is taken over when it is assigned
ASSIGN_CANDIDATES = 4  # clusters compared by angle when assigning (the nearest by projection distance)
COMPILED_ABOVE = 1000  # clients above which proximity_matrix takes the compiled kernel (angles.py)
PAIRS_PER_BLOCK = 1 << 16  # client pairs whose p x p products are held at once when assigning (13 MB at p = 5)
# bytes per client pair an exact clustering holds at its peak: the m x m float64 angles, the condensed
# copy linkage takes and linkage's own working copy (measured: 2.5 GB at 10,000 clients, process included)
EXACT_BYTES_PER_PAIR = 24


def available_memory() -> int | None:
    """Bytes this machine can still hand out (Linux's MemAvailable, else physical memory), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_exact_memory(m: int, available: int | None = None) -> None:
    """Refuse, in one line, an exact clustering of `m` clients that would not fit in memory (it would
    otherwise end in an out-of-memory kill after Stage 0). `available`: bytes (default: this machine's)."""
    needed = EXACT_BYTES_PER_PAIR * m * m
    available = available_memory() if available is None else available
    if available is not None and needed > available:
        raise GeneflError(f"clustering: {m:,} clients clustered exactly need about {needed / 1e9:.1f} GB (every pairwise "
                          f"angle), more than the {available / 1e9:.1f} GB available here; lower clustering.sample "
                          f"(with clustering.method = \"sampled\")")


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


def angles_of(products: torch.Tensor) -> torch.Tensor:
    """Principal angles in degrees from products U_i^T U_j (..., p, p) of orthonormal bases: the arccos
    of their singular values, batched over the leading dimensions."""
    return torch.rad2deg(torch.arccos(torch.linalg.svdvals(products).clamp(0.0, 1.0)))


def principal_angles(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """Principal angles in degrees between span(u1) and span(u2), both with orthonormal columns; u2
    may be a stack (k, d, p), giving (k, p)."""
    return angles_of(u1.double().T @ u2.double())


def proximity_matrix(signatures: list[torch.Tensor]) -> torch.Tensor:
    """A[i, j] = mean principal angle (degrees) between clients i and j; symmetric, zero diagonal.
    Above COMPILED_ABOVE clients, from the compiled kernel of `angles` (the same angles to ~1e-9
    degrees, about 10x less CPU at 10,000 clients); up to it, batched LAPACK as always (bit for bit today's numbers)."""
    u = torch.stack([s.double() for s in signatures])  # (m, d, p)
    if len(u) > COMPILED_ABOVE:
        from genefl.algorithms import angles  # numba, loaded only by servers of large populations

        return torch.from_numpy(angles.mean_angle_matrix(u))
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
        angles[start : start + b] = angles_of(gram).mean(dim=-1)
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
    dist = principal_angles(sig, torch.stack(member_signatures)).mean(dim=-1).numpy()  # one batched call
    labels_arr = np.asarray(labels)
    clusters = sorted(set(labels))
    means = [dist[labels_arr == k].mean() for k in clusters]
    return clusters[int(np.argmin(means))]


def assign(rest: list[torch.Tensor], members: list[torch.Tensor], labels: list[int],
           generator: np.random.Generator, limit: float = math.inf) -> list[int]:
    """For each basis in `rest`, the cluster (of `labels`, one per basis in `members`) at the smallest
    mean principal angle over up to ASSIGN_MEMBERS of its members (a seeded choice), or -1 where even
    that is above `limit` degrees. With more than ASSIGN_CANDIDATES clusters, only the
    ASSIGN_CANDIDATES nearest by the mean projection distance p - ||U_i^T U_j||_F^2 (one matrix
    product, no SVD) are compared by angle. Ties: the lowest id."""
    labels_arr = np.asarray(labels)
    kept = [np.flatnonzero(labels_arr == k) for k in range(int(labels_arr.max()) + 1)]
    kept = [np.sort(generator.choice(ids, ASSIGN_MEMBERS, replace=False)) if len(ids) > ASSIGN_MEMBERS else ids
            for ids in kept]
    ids = np.concatenate(kept)
    owner = torch.from_numpy(labels_arr[ids])  # (k,): each kept member's cluster
    share = torch.zeros(len(ids), len(kept), dtype=torch.float64)  # (k, K): angles @ share = per-cluster means
    share[torch.arange(len(ids)), owner] = torch.tensor([1.0 / len(kept[c]) for c in owner.tolist()], dtype=torch.float64)
    cols = torch.stack([members[i].double() for i in ids])  # (k, d, p)
    flat = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (k * p, d)
    block = max(1, PAIRS_PER_BLOCK // len(ids))
    chosen = [_nearest(torch.stack([r.double() for r in rest[start : start + block]]), flat, owner, share, limit)
              for start in range(0, len(rest), block)]
    return torch.cat(chosen).tolist() if chosen else []


def _nearest(part: torch.Tensor, flat: torch.Tensor, owner: torch.Tensor, share: torch.Tensor, limit: float) -> torch.Tensor:
    """`assign` for one block of bases `part` (b, d, p) against the kept members' stacked columns."""
    (b, _, p), (k, clusters) = part.shape, share.shape
    gram = (part.transpose(1, 2).reshape(b * p, -1) @ flat.T).reshape(b, p, k, p).permute(0, 2, 1, 3)  # (b, k, p, p)
    empty = share.sum(dim=0) == 0  # (K,): a label no member carries
    candidate = ~empty.expand(b, clusters)
    if clusters > ASSIGN_CANDIDATES:
        projection = ((p - gram.square().sum(dim=(2, 3))) @ share).masked_fill(empty, math.inf)  # (b, K)
        near = torch.argsort(projection, dim=1, stable=True)[:, :ASSIGN_CANDIDATES]  # (b, c)
        candidate = candidate & torch.zeros(b, clusters, dtype=torch.bool).scatter_(1, near, True)
    compared = candidate[:, owner]  # (b, k): the pairs whose angles are needed
    angles = torch.zeros(b, k, dtype=torch.float64)
    angles[compared] = angles_of(gram[compared]).mean(dim=-1)
    best, nearest = torch.min((angles @ share).masked_fill(~candidate, math.inf), dim=1)
    return nearest.masked_fill(best > limit, -1)


def cluster_sampled(signatures: list[torch.Tensor], sample: int, num_clusters: int = 0, beta: float = 35.0,
                    generator: np.random.Generator | None = None) -> list[int]:
    """`cluster` on a seeded sample of `sample` signatures, every other one `assign`ed to its nearest
    cluster; labels 0..K-1 in order of first appearance. With sample >= len(signatures) it is
    `cluster(proximity_matrix(signatures))` exactly. Cut by `beta` (num_clusters = 0), the clients
    farther than beta on average from every sampled cluster, which the exact cut would keep apart
    from them too, are clustered among themselves the same way (a group the sample missed is then
    still one cluster); on Synthetic(1, 1) at 300 of 1,000 clients this raised the agreement with
    the exact clustering (ARI, 10 sample seeds) from 0.62 to 0.70."""
    m = len(signatures)
    if sample >= m:
        return cluster(proximity_matrix(signatures), num_clusters, beta)
    generator = generator if generator is not None else np.random.default_rng(0)
    picked = np.sort(generator.choice(m, sample, replace=False))
    rest = np.setdiff1d(np.arange(m), picked)
    members = [signatures[i] for i in picked]
    labels = np.empty(m, dtype=np.int64)
    labels[picked] = cluster(proximity_matrix(members), num_clusters, beta)
    limit = beta if num_clusters <= 0 else math.inf
    labels[rest] = assign([signatures[i] for i in rest], members, labels[picked].tolist(), generator, limit)
    alone = np.flatnonzero(labels == -1)
    if len(alone):  # the clients no sampled cluster holds are clustered among themselves, the same way
        apart = cluster_sampled([signatures[i] for i in alone], sample, num_clusters, beta, generator)
        labels[alone] = labels.max() + 1 + np.asarray(apart)
    order: dict[int, int] = {}
    return [order.setdefault(int(r), len(order)) for r in labels]
