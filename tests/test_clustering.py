import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from genefl.algorithms import clustering


def test_identical_subspaces_are_0_degrees_orthogonal_are_90():
    e = torch.eye(4)
    assert torch.allclose(clustering.principal_angles(e[:, :2], e[:, :2]), torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(clustering.principal_angles(e[:, :2], e[:, 2:]), torch.full((2,), 90.0, dtype=torch.float64))


def test_hand_computed_45_degrees():
    u1 = torch.tensor([[1.0], [0.0]])
    u2 = torch.tensor([[1.0], [1.0]]) / 2**0.5
    assert clustering.principal_angles(u1, u2).item() == pytest.approx(45.0)


def test_proximity_matrix_symmetric_zero_diagonal_and_matches_pairwise():
    gen = torch.Generator().manual_seed(0)
    sigs = [clustering.signature(torch.randn(30, 12, generator=gen), 3) for _ in range(4)]
    a = clustering.proximity_matrix(sigs)
    assert torch.allclose(a, a.T) and torch.all(a.diagonal() == 0)
    assert a[1, 2].item() == pytest.approx(clustering.principal_angles(sigs[1], sigs[2]).mean().item(), abs=1e-6)


def test_signature_is_orthonormal_and_deterministic_also_randomized():
    x = torch.randn(3000, 1, 40, 40, generator=torch.Generator().manual_seed(1))  # 4.8M entries: randomized path
    u1 = clustering.signature(x, 5, torch.Generator().manual_seed(7))
    u2 = clustering.signature(x, 5, torch.Generator().manual_seed(7))
    assert u1.shape == (1600, 5) and torch.equal(u1, u2)
    assert torch.allclose(u1.T @ u1, torch.eye(5), atol=1e-4)


def three_groups():
    digits = load_digits()
    x, y = torch.tensor(digits.data, dtype=torch.float32), np.asarray(digits.target)
    groups = [(0, 1, 2), (3, 4, 5), (6, 7, 8)]
    rng = np.random.default_rng(0)
    clients, truth = [], []
    for g, classes in enumerate(groups):
        idx = rng.permutation(np.flatnonzero(np.isin(y, classes)))
        for c in range(4):
            clients.append(x[idx[c * 60 : (c + 1) * 60]])
            truth.append(g)
    return clients, truth


@pytest.mark.parametrize("num_clusters", [0, 3])
def test_three_disjoint_label_groups_are_recovered(num_clusters):
    clients, truth = three_groups()
    sigs = [clustering.signature(c[:-10], 5) for c in clients]
    labels = clustering.cluster(clustering.proximity_matrix(sigs), num_clusters=num_clusters, beta=35.0)
    assert labels == [0] * 4 + [1] * 4 + [2] * 4
    # a newcomer from group 2 (held-out samples of the last client) joins group 2's cluster
    newcomer = clustering.signature(clients[-1][-10:].repeat(1, 1), 5)
    assert clustering.nearest_cluster(newcomer, sigs[:-1], labels[:-1]) == 2



# ---- at scale: a seeded sample clustered exactly, the rest assigned (clustering.method = "sampled") ----
def planted(n: int, groups: int, noise: float = 0.02, d: int = 60, p: int = 5, seed: int = 0):
    """Signatures near `groups` random p-dimensional subspaces of R^d (about 10 degrees from their
    group's, 60-80 from the others'), and each one's group."""
    gen = torch.Generator().manual_seed(seed)
    bases = [torch.linalg.qr(torch.randn(d, p, generator=gen, dtype=torch.float64))[0] for _ in range(groups)]
    truth = torch.randint(0, groups, (n,), generator=gen).tolist()
    sigs = [torch.linalg.qr(bases[t] + noise * torch.randn(d, p, generator=gen, dtype=torch.float64))[0].float() for t in truth]
    return sigs, truth


def random_subspaces(n: int, d: int = 12, p: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.linalg.qr(torch.randn(d, p, generator=gen))[0] for _ in range(n)]


@pytest.mark.parametrize("num_clusters, beta", [(0, 35.0), (0, 60.0), (4, 35.0)])
def test_a_sample_as_large_as_the_population_is_the_exact_clustering(num_clusters, beta):
    sigs = random_subspaces(60)
    exact = clustering.cluster(clustering.proximity_matrix(sigs), num_clusters, beta)
    for sample in (60, 61, 1000):
        assert clustering.cluster_sampled(sigs, sample, num_clusters, beta, np.random.default_rng(3)) == exact


@pytest.mark.parametrize("num_clusters", [0, 6])
def test_a_small_sample_recovers_planted_groups(num_clusters):
    from sklearn.metrics import adjusted_rand_score

    sigs, truth = planted(240, 6)
    exact = clustering.cluster(clustering.proximity_matrix(sigs), num_clusters, 35.0)
    assert adjusted_rand_score(truth, exact) == 1.0
    for seed in range(3):
        labels = clustering.cluster_sampled(sigs, 30, num_clusters, 35.0, np.random.default_rng(seed))
        assert adjusted_rand_score(exact, labels) == 1.0 and labels[0] == 0


def test_sampled_clustering_is_seeded():
    sigs = random_subspaces(150)
    a, b, c = (clustering.cluster_sampled(sigs, 30, 0, 60.0, np.random.default_rng(s)) for s in (1, 1, 2))
    assert a == b and a != c


def test_assignment_compares_the_nearest_clusters_by_mean_angle():
    """Hand-made: members along e1 (cluster 0) and e2 (cluster 1) of R^3 with p = 1; a client at 30
    degrees from e1 (60 from e2) joins cluster 0, one at 80 degrees from e1 joins cluster 1, and
    with more clusters than ASSIGN_CANDIDATES the projection distance keeps the right one in play."""
    e = torch.eye(3)
    at = lambda deg: torch.tensor([[np.cos(np.radians(deg))], [np.sin(np.radians(deg))], [0.0]], dtype=torch.float32)  # noqa: E731
    members, labels = [e[:, :1], e[:, :1], e[:, 1:2]], [0, 0, 1]
    assert clustering.assign([at(30), at(80)], members, labels, np.random.default_rng(0)) == [0, 1]
    many = [e[:, 2:3]] * 5 + members  # clusters 0..4 along e3, then e1 (5) and e2 (6)
    assert clustering.assign([at(30), at(80)], many, [0, 1, 2, 3, 4, 5, 5, 6], np.random.default_rng(0)) == [5, 6]
    # cut at beta = 35 degrees: the client at 30 joins cluster 0, the one at 80 (and 10 from e2) cluster
    # 1, the one along e3 (90 from both) none
    assert clustering.assign([at(30), at(80), e[:, 2:3]], members, labels, np.random.default_rng(0), limit=35.0) == [0, 1, -1]
    assert clustering.assign([at(30), at(80)], members, [0, 0, 2], np.random.default_rng(0)) == [0, 2]  # no cluster 1


def test_a_group_the_sample_missed_is_clustered_on_its_own():
    """Under the beta cut, clients far from every sampled cluster are clustered among themselves: a
    small planted group that no sampled client belongs to still comes out as one cluster."""
    from sklearn.metrics import adjusted_rand_score

    big, _ = planted(190, 4)
    small, _ = planted(6, 1, seed=9)
    sigs = big + small
    exact = clustering.cluster(clustering.proximity_matrix(sigs), 0, 35.0)
    missed = 0
    for seed in range(6):
        missed += not (np.random.default_rng(seed).choice(196, 20, replace=False) >= 190).any()
        labels = clustering.cluster_sampled(sigs, 20, 0, 35.0, np.random.default_rng(seed))
        assert adjusted_rand_score(exact, labels) == 1.0
    assert missed  # at least one seed's sample held none of the small group


def test_genefl_and_pacfl_sample_only_above_clustering_sample():
    from genefl.algorithms.clustered import cluster_clients
    from genefl.config import load_config
    from genefl.protocol.messages import ClientUpdate

    sigs = random_subspaces(120)
    updates = {c: ClientUpdate(extras={"signature": s}) for c, s in enumerate(sigs)}
    exact, _ = cluster_clients(load_config(None, ["clustering.method=exact", "clustering.beta=60"]), updates)
    default, _ = cluster_clients(load_config(None, ["clustering.beta=60"]), updates)  # 120 <= sample = 10,000
    sampled, _ = cluster_clients(load_config(None, ["clustering.sample=30", "clustering.beta=60"]), updates)
    assert default == exact and sampled != exact
    planted_sigs, _ = planted(120, 4)
    updates = {c: ClientUpdate(extras={"signature": s}) for c, s in enumerate(planted_sigs)}
    assert cluster_clients(load_config(None, ["clustering.sample=30"]), updates)[0] == \
        cluster_clients(load_config(None, ["clustering.method=exact"]), updates)[0]


def test_a_newcomer_among_more_members_than_the_sample_joins_as_the_sample_left_out_ones_do():
    from genefl.algorithms.clustered import join_cluster
    from genefl.config import load_config
    from genefl.protocol.messages import ClientUpdate

    sigs, truth = planted(61, 4)
    members, newcomer = dict(enumerate(sigs[:60])), ClientUpdate(extras={"signature": sigs[60]})
    cluster_of = dict(enumerate(truth[:60]))
    for overrides in (["clustering.sample=20"], ["clustering.method=exact"], []):  # assign, then every member twice
        k, joined, known = join_cluster(load_config(None, overrides), cluster_of, members, 60, newcomer)
        assert k == truth[60] and joined[60] == k and 60 in known


# ---- the compiled kernel (angles.py) that proximity_matrix takes above COMPILED_ABOVE clients ----
def test_compiled_angles_equal_lapack_ones_for_every_pair():
    """Random bases (p = 1, 3, 5 of R^12 and R^60), exact duplicates (0 degrees), nearly parallel ones
    (a 1e-4 perturbation: the least accurate case for the squared-cosine route) and a pair with an
    orthogonal column: every entry within 1e-6 degrees of batched LAPACK's, zero diagonal, symmetric."""
    from genefl.algorithms import angles

    gen = torch.Generator().manual_seed(0)
    for d, p in ((12, 1), (12, 3), (60, 5)):
        bases = [torch.linalg.qr(torch.randn(d, p, generator=gen, dtype=torch.float64))[0] for _ in range(150)]
        bases += [b.clone() for b in bases[:5]]
        bases += [torch.linalg.qr(b + 1e-4 * torch.randn(d, p, generator=gen, dtype=torch.float64))[0] for b in bases[:20]]
        e = torch.eye(d, dtype=torch.float64)
        bases += [e[:, :p], e[:, 1 : p + 1]]  # p - 1 shared columns, one orthogonal: mean angle 90 / p
        compiled = angles.mean_angle_matrix(torch.stack(bases))
        expected = clustering.proximity_matrix(bases).numpy()  # 177 clients: the LAPACK path
        assert np.abs(compiled - expected).max() < 1e-6
        assert np.array_equal(compiled, compiled.T) and not compiled.diagonal().any()
        assert compiled[-2, -1] == pytest.approx(90.0 / p, abs=1e-9)
        assert compiled[0, 150] == pytest.approx(0.0, abs=1e-5)


def test_above_compiled_above_clients_the_clustering_is_unchanged(monkeypatch):
    """The same planted population clustered through LAPACK and, with the threshold lowered, through the
    compiled kernel (in blocks of 64 clients, so that a block edge is crossed): the same labels."""
    sigs, truth = planted(150, 5)
    lapack = clustering.cluster(clustering.proximity_matrix(sigs), 0, 35.0)
    monkeypatch.setattr(clustering, "COMPILED_ABOVE", 100)
    compiled = clustering.proximity_matrix(sigs)
    assert compiled.dtype == torch.float64 and compiled.shape == (150, 150)
    assert clustering.cluster(compiled, 0, 35.0) == lapack
    assert len(set(lapack)) == 5


def test_an_exact_clustering_too_large_for_memory_is_refused_in_one_line():
    """1,000,000 clients clustered exactly need 24 TB for their pairwise angles: refused by name before
    anything is allocated (no machine this runs on has that much); 10,000 (2.4 GB) fit a 4 GB budget."""
    from genefl.errors import GeneflError

    with pytest.raises(GeneflError, match=r"^clustering: 1,000,000 clients clustered exactly need about 24000.0 GB .* lower clustering.sample"):
        clustering.check_exact_memory(1_000_000)
    with pytest.raises(GeneflError, match="more than the 1.0 GB available here"):
        clustering.check_exact_memory(10_000, available=10**9)
    clustering.check_exact_memory(10_000, available=4 * 10**9)
    assert clustering.available_memory() > 10**8
