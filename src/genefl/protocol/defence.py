"""An optional per-client defence for every method: clip each upload's change, then add Gaussian noise.

With `dp_clip = C > 0`, a client replaces every floating-point tensor it uploads by
θ_received + Δ · min(1, C / ||Δ||) + N(0, (dp_noise · C)²), Δ = θ_sent − θ_received, ||Δ|| the L2 norm
over all uploaded tensors together (what the server received is the broadcast it was sent; every
built-in method uploads only tensors it was sent, so every uploaded tensor is covered; extras such
as SCAFFOLD's Δc are not). The noise is drawn from the client's own seeded generator.

Accounting, as stated: each upload is one release of the Gaussian mechanism with L2 sensitivity C and
noise std σC (σ = `dp_noise`), so it is (ε, δ)-DP for ε = sqrt(2 ln(1.25/δ)) / σ (Dwork and Roth,
Theorem A.1; the bound assumes ε ≤ 1). results.json reports that per-upload ε at δ = 1e-5; a client
that uploads in T rounds composes T such releases (no amplification by sampling is claimed).
"""

from __future__ import annotations

import math

import torch

from .messages import Broadcast, ClientUpdate

DELTA = 1e-5


def protect(update: ClientUpdate, broadcast: Broadcast, clip: float, noise: float, generator: torch.Generator) -> ClientUpdate:
    if clip <= 0 or not isinstance(update, ClientUpdate):
        return update
    keys = [k for k, v in update.tensors.items() if v.is_floating_point() and k in broadcast.tensors]
    if not keys:
        return update
    delta = {k: update.tensors[k] - broadcast.tensors[k].to(update.tensors[k].device) for k in keys}
    norm = math.sqrt(sum(float((d.double() ** 2).sum()) for d in delta.values()))
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    tensors = dict(update.tensors)
    for k in keys:
        jitter = torch.randn(delta[k].shape, generator=generator).to(delta[k]) * (noise * clip) if noise > 0 else 0.0
        tensors[k] = broadcast.tensors[k].to(delta[k]) + delta[k] * scale + jitter
    return ClientUpdate(tensors=tensors, extras=update.extras, meta=update.meta)


def epsilon_per_upload(noise: float, delta: float = DELTA) -> float | None:
    """ε of one Gaussian-mechanism release at noise multiplier σ (None without noise)."""
    return math.sqrt(2 * math.log(1.25 / delta)) / noise if noise > 0 else None
