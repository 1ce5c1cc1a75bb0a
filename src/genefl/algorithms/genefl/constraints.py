"""Stage 1's two quadratic terms, as the per-parameter coefficients of one gradient correction.

    L = CE + (λ_s/2) Σ_l ξ_l ||θ_l − Θ_l||²  +  (λ_e/2) Σ_j M_j F̃_j (θ_j − Θ_j)²

Both terms are (1/2) Σ_j c_j (θ_j − Θ_j)² with c_j = λ_s ξ_l(j) + λ_e M_j F̃_j, whose gradient is
c_j (θ_j − Θ_j). `coefficients` precomputes c once per client and round; the training loop then adds
c ⊙ (θ − Θ) to the gradient with fused kernels (`training.GradientCorrection`). `penalty` is the
explicit loss, kept for tests and documentation: its autograd gradient must equal the correction.

Stability: an explicit SGD step of size η on (c/2)(θ − Θ)² multiplies θ − Θ by (1 − η c), which
overshoots the anchor for η c > 1 and diverges for η c > 2. Normalised Fisher values are large on a
few parameters (up to 43 on the digits MLP's head, measured), and with η = 0.05 training diverged to
chance accuracy. So c is clipped at 1/η: at the cap a step pulls the coordinate exactly back to its
anchor, i.e. the strongest constraint an explicit step can express, which is what a very large
Fisher value asks for.
"""

from __future__ import annotations

import torch

from ...protocol.layers import Layer


def coefficients(param_names: list[str], layers: list[Layer], xi: list[float], masked_fisher: dict[str, torch.Tensor] | None,
                 lambda_s: float, lambda_e: float, max_coef: float = float("inf")) -> list[torch.Tensor | float]:
    """c per trainable parameter tensor, in `param_names` order (the model's parameter order).

    xi: one weight per layer; masked_fisher: M ⊙ F̃ per parameter name (None = no Fisher term);
    max_coef: the clip (1/lr in training, see the module doc)."""
    layer_of = {key: i for i, layer in enumerate(layers) for key in layer.param_keys}
    coefs: list[torch.Tensor | float] = []
    for name in param_names:
        smooth = lambda_s * xi[layer_of[name]]
        if masked_fisher is not None and lambda_e > 0:
            coefs.append((lambda_e * masked_fisher[name] + smooth).clamp_(max=max_coef))
        else:
            coefs.append(min(smooth, max_coef))
    return coefs


def penalty(params: list[torch.Tensor], anchor: list[torch.Tensor], coefs: list[torch.Tensor | float]) -> torch.Tensor:
    """(1/2) Σ c ⊙ (θ − Θ)², the explicit form of both terms together."""
    return sum(0.5 * (c * (p - a) ** 2).sum() for p, a, c in zip(params, anchor, coefs))
