"""Stage 1: diagonal empirical Fisher information and the elastic mask.

F_j = mean over up to `max_samples` local samples of (∂ log p(y | x; θ) / ∂θ_j)², y the true label.
Per-sample gradients come from `torch.func` (vmap over grad of a functional call), in chunks, never
from a Python loop over samples. The model is evaluated in eval mode (BatchNorm uses its running
statistics), so a sample's gradient does not depend on the others in its batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from .layers import Layer


def diagonal_fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor, max_samples: int,
                    generator: torch.Generator | None = None, chunk_size: int = 128) -> dict[str, torch.Tensor]:
    """{parameter name: F} for every trainable parameter; the model is left unchanged."""
    if len(y) > max_samples:
        pick = torch.randperm(len(y), generator=generator)[:max_samples].to(y.device)
        x, y = x[pick], y[pick]
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def log_likelihood(p, xi, yi):
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return -nn.functional.cross_entropy(logits, yi.unsqueeze(0))  # log p(y | x)

    per_sample_grads = vmap(grad(log_likelihood), in_dims=(None, 0, 0))
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(y), chunk_size):
            grads = per_sample_grads(params, x[start : start + chunk_size], y[start : start + chunk_size])
            for k, g in grads.items():  # g: (chunk, *param shape)
                total[k] += (g * g).sum(dim=0)
    finally:
        model.train(was_training)
    return {k: v / max(len(y), 1) for k, v in total.items()}


def elastic_mask(fisher: dict[str, torch.Tensor], layers: list[Layer], top: float) -> dict[str, torch.Tensor]:
    """M_j = 1 for the top `top` fraction (at least one entry) of F within each layer, else 0."""
    mask = {}
    for layer in layers:
        keys = [k for k in layer.param_keys if k in fisher]
        if not keys:
            continue
        flat = torch.cat([fisher[k].reshape(-1) for k in keys])  # the layer's parameters pooled
        keep = max(1, math.ceil(top * flat.numel()))
        chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        chosen[torch.topk(flat, keep, sorted=False).indices] = True
        offset = 0
        for k in keys:
            n = fisher[k].numel()
            mask[k] = chosen[offset : offset + n].reshape(fisher[k].shape).to(fisher[k].dtype)
            offset += n
    return mask


def normalised_fisher(fisher: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """F̃ = F / mean(F over the masked entries of all layers), so λ_e has a stable scale."""
    masked_sum = sum(float((fisher[k] * mask[k]).sum()) for k in mask)
    masked_count = sum(float(mask[k].sum()) for k in mask)
    mean = masked_sum / masked_count if masked_count else 0.0
    if mean <= 0.0:
        return {k: torch.zeros_like(v) for k, v in fisher.items()}
    return {k: v / mean for k, v in fisher.items()}
