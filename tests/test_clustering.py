import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from genefl import clustering


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

