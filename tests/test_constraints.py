"""GENE-FL's loss terms and the baselines' distinctive math, against hand-computed values."""

import pytest
import torch

from genefl.algorithms.genefl.constraints import coefficients, penalty
from genefl.protocol.layers import Layer
from genefl.protocol.training import GradientCorrection

LAYERS = [Layer("a", ("a.w",), ("a.w",), 2, 8), Layer("b", ("b.w",), ("b.w",), 1, 4)]


def test_coefficients_combine_smoothing_and_masked_fisher():
    masked = {"a.w": torch.tensor([2.0, 0.0]), "b.w": torch.tensor([0.5])}
    c = coefficients(["a.w", "b.w"], LAYERS, xi=[0.25, 0.75], masked_fisher=masked, lambda_s=0.1, lambda_e=2.0)
    assert torch.allclose(c[0], torch.tensor([2 * 2.0 + 0.025, 0.025]))
    assert torch.allclose(c[1], torch.tensor([2 * 0.5 + 0.075]))
    clipped = coefficients(["a.w", "b.w"], LAYERS, [0.25, 0.75], masked, 0.1, 2.0, max_coef=1.0)
    assert torch.allclose(clipped[0], torch.tensor([1.0, 0.025]))


def test_smoothing_only_gives_scalar_coefficients():
    assert coefficients(["a.w", "b.w"], LAYERS, [0.25, 0.75], None, 0.1, 1.0) == pytest.approx([0.025, 0.075])


def test_folded_gradient_equals_autograd_of_both_terms():
    theta = [torch.tensor([1.0, -2.0], requires_grad=True), torch.tensor([3.0], requires_grad=True)]
    anchor = [torch.tensor([0.5, 0.0]), torch.tensor([1.0])]
    coefs = [torch.tensor([4.0, 0.5]), 0.2]
    penalty(theta, anchor, coefs).backward()
    # hand: c (θ − Θ) = [4*0.5, 0.5*-2], [0.2*2]
    assert torch.allclose(theta[0].grad, torch.tensor([2.0, -1.0])) and torch.allclose(theta[1].grad, torch.tensor([0.4]))
    folded = [p.detach().clone().requires_grad_() for p in theta]
    for p in folded:
        p.grad = torch.zeros_like(p)
    GradientCorrection(anchor=anchor, coef=coefs).apply(folded)
    assert all(torch.allclose(f.grad, t.grad) for f, t in zip(folded, theta))


def test_fedprox_and_scaffold_corrections():
    p = torch.tensor([2.0, 0.0], requires_grad=True)
    p.grad = torch.tensor([1.0, 1.0])
    GradientCorrection(anchor=[torch.tensor([1.0, 1.0])], coef=0.1).apply([p])  # mu (θ − θ_g)
    assert torch.allclose(p.grad, torch.tensor([1.1, 0.9]))
    p.grad = torch.tensor([1.0, 1.0])
    GradientCorrection(offset=[torch.tensor([0.5, -0.25])]).apply([p])  # + (c − c_i)
    assert torch.allclose(p.grad, torch.tensor([1.5, 0.75]))
