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

from ...protocol.layers import Layer


# Per-sample gradients of one chunk hold chunk x (number of parameters) floats: cap that at 2^26
# (256 MB in float32). When that leaves fewer than MIN_VMAP_CHUNK samples per chunk (a ResNet-18,
# 11M parameters, gets 6), vmap's batched convolution backward is slower than plain one-sample
# backward passes (measured ~0.5 s vs ~0.05 s per sample on 2 CPU cores), so big models take the loop.
MAX_CHUNK_FLOATS = 1 << 26
MIN_VMAP_CHUNK = 16


def diagonal_fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor, max_samples: int,
                    generator: torch.Generator | None = None, chunk_size: int = 128,
                    per_sample: str = "auto") -> dict[str, torch.Tensor]:
    """{parameter name: F} for every trainable parameter; the model is left unchanged.

    `per_sample`: "vmap" (vectorised, chunks of `chunk_size`), "loop" (one backward pass per
    sample) or "auto" (vmap unless the memory cap makes its chunks too small). Same values either way.
    """
    if len(y) > max_samples:
        pick = torch.randperm(len(y), generator=generator)[:max_samples].to(y.device)
        x, y = x[pick], y[pick]
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def log_likelihood(p, xi, yi):
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return -nn.functional.cross_entropy(logits, yi.unsqueeze(0))  # log p(y | x)

    per_sample_grads = vmap(grad(log_likelihood), in_dims=(None, 0, 0))
    num_params = sum(v.numel() for v in params.values())
    chunk_size = max(1, min(chunk_size, MAX_CHUNK_FLOATS // max(num_params, 1)))
    if per_sample == "auto":
        per_sample = "vmap" if chunk_size >= min(MIN_VMAP_CHUNK, len(y)) else "loop"
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    was_training = model.training
    model.eval()
    try:
        if per_sample == "loop":
            _accumulate_loop(model, x, y, total)
        else:
            for start in range(0, len(y), chunk_size):
                grads = per_sample_grads(params, x[start : start + chunk_size], y[start : start + chunk_size])
                for k, g in grads.items():  # g: (chunk, *param shape)
                    total[k] += (g * g).sum(dim=0)
    finally:
        model.train(was_training)
    return {k: v / max(len(y), 1) for k, v in total.items()}


def batch_fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor, max_samples: int,
                 generator: torch.Generator | None = None, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """A cheaper estimator (`fisher_estimator = "batch"`): the mean over mini-batches of the squared
    mini-batch gradient of log p(y | x). It costs max_samples / batch_size backward passes instead
    of max_samples per-sample gradients. It is not the empirical Fisher (cross-sample terms stay in
    each square, and it is about batch_size times smaller), but GENE-FL uses F only through a
    per-layer top-k mask and F normalised by its masked mean, so a common scale does not matter."""
    if len(y) > max_samples:
        pick = torch.randperm(len(y), generator=generator)[:max_samples].to(y.device)
        x, y = x[pick], y[pick]
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    total = {k: torch.zeros_like(p) for k, p in named}
    was_training = model.training
    model.eval()
    try:
        count = 0
        for start in range(0, len(y), batch_size):
            logp = -nn.functional.cross_entropy(model(x[start : start + batch_size]), y[start : start + batch_size])
            grads = torch.autograd.grad(logp, [p for _, p in named])
            torch._foreach_addcmul_([total[k] for k, _ in named], grads, grads)
            count += 1
    finally:
        model.train(was_training)
    return {k: v / max(count, 1) for k, v in total.items()}


def _accumulate_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, total: dict[str, torch.Tensor]) -> None:
    """total[k] += (∂ log p(y_i | x_i) / ∂θ_k)² summed over samples, one backward pass each."""
    named = [(k, p) for k, p in model.named_parameters() if k in total]
    params = [p for _, p in named]
    for i in range(len(y)):
        logp = -nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(logp, params)
        for (k, _), g in zip(named, grads):
            total[k] += g * g


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
