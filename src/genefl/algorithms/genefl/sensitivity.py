"""Stage 2: layer sensitivity, smoothing weights and learnGene condensation.

Stability s_l = cos(vec θ_l after, vec θ_l before): a layer that local training barely turned is
general, one it turned a lot is task-specific. ξ_l = s_l n_l / Σ s_m n_m weights next round's
smoothing term. The learnGene is a set of whole layers under a byte budget, chosen by score:
"window" (default) = the contiguous run of body layers that fits with the most layers (ties: higher
mean score, then earlier); "greedy" = by decreasing score, adjacent or not; "random" = a seeded
random subset that fits (the ablation's control).

Choices: a layer whose weights are all zero before or after has stability 1 if unchanged, else 0;
negative stabilities count as 0 in ξ (a layer turned past 90° gets no smoothing weight).
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from ...protocol.layers import Layer

SELECTIONS = ("window", "greedy", "random", "input", "output")


def stability(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], layers: list[Layer]) -> list[float]:
    scores = []
    for layer in layers:
        a = torch.cat([before[k].reshape(-1).double() for k in layer.param_keys])
        b = torch.cat([after[k].reshape(-1).double() for k in layer.param_keys])
        norms = float(a.norm() * b.norm())
        scores.append(float(a @ b) / norms if norms > 0 else float(torch.equal(a, b)))
    return scores


def layer_weights(scores: list[float], layers: list[Layer]) -> list[float]:
    """ξ_l = max(s_l, 0) n_l / Σ_m max(s_m, 0) n_m; uniform when every score is <= 0."""
    mass = [max(s, 0.0) * layer.numel for s, layer in zip(scores, layers)]
    total = sum(mass)
    return [m / total for m in mass] if total > 0 else [1.0 / len(layers)] * len(layers)


def taylor_importance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[Layer]) -> list[float]:
    """Σ_j |θ_j ∂L/∂θ_j| per layer, L = mean cross-entropy on (x, y), per parameter (mean over the layer)."""
    params = dict(model.named_parameters())
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    scores = []
    for layer in layers:
        total = sum(float((params[k].detach() * params[k].grad).abs().sum()) for k in layer.param_keys)
        scores.append(total / max(layer.numel, 1))
    model.zero_grad(set_to_none=True)
    return scores


def weighted_mean_scores(per_client: list[list[float]], weights: list[float]) -> list[float]:
    total = sum(weights)
    return [sum(w * s[l] for s, w in zip(per_client, weights)) / total for l in range(len(per_client[0]))]


def select_gene_layers(scores: list[float], layers: list[Layer], budget_bytes: int, include_head: bool = False,
                       mode: str = "window", generator: torch.Generator | None = None) -> list[int]:
    """Indices (forward order) of the learnGene layers: never more than `budget_bytes` in total."""
    candidates = list(range(len(layers) if include_head else len(layers) - 1))
    fitting = [i for i in candidates if layers[i].nbytes <= budget_bytes]
    if not fitting:
        smallest = min(candidates or range(len(layers)), key=lambda i: layers[i].nbytes)
        raise ConfigError(f"gene_budget: {budget_bytes} bytes cannot hold any layer (smallest: "
                          f"{layers[smallest].name!r}, {layers[smallest].nbytes} bytes); raise gene_budget")
    if mode == "window":
        return _best_window(scores, layers, candidates, budget_bytes)
    if mode in ("input", "output"):  # the contiguous run at one end (Learngene inherits the output side)
        ordered = candidates if mode == "input" else candidates[::-1]
        ordered = ordered[next(k for k, i in enumerate(ordered) if layers[i].nbytes <= budget_bytes):]
        window, used = [], 0
        for i in ordered:
            if used + layers[i].nbytes > budget_bytes:
                break
            window.append(i)
            used += layers[i].nbytes
        return sorted(window)
    if mode == "greedy":
        order = sorted(candidates, key=lambda i: (-scores[i], i))
    elif mode == "random":
        order = [candidates[i] for i in torch.randperm(len(candidates), generator=generator).tolist()]
    else:
        raise ConfigError(f"gene_selection: {mode!r} is not one of {', '.join(SELECTIONS)}")
    chosen, used = [], 0
    for i in order:
        if used + layers[i].nbytes <= budget_bytes:
            chosen.append(i)
            used += layers[i].nbytes
    return sorted(chosen)


def _best_window(scores: list[float], layers: list[Layer], candidates: list[int], budget: int) -> list[int]:
    best, best_key = [], None
    for start in candidates:
        used, window = 0, []
        for i in candidates[candidates.index(start):]:
            if used + layers[i].nbytes > budget:
                break
            window.append(i)
            used += layers[i].nbytes
        if not window:
            continue
        key = (len(window), sum(scores[i] for i in window) / len(window))
        if best_key is None or key > best_key:  # strict: ties keep the earlier window
            best, best_key = window, key
    return best
