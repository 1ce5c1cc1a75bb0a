"""One streaming, layer-wise weighted mean, shared by every aggregating method.

It keeps Σ w·θ and Σ w per tensor name, so a layer uploaded by 3 of 10 clients is averaged over
those 3, and a layer nobody sent keeps its previous value. Updates are folded in one at a time:
no list of client models is ever held.
"""

from __future__ import annotations

import torch


class LayerwiseMean:
    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._weights: dict[str, float] = {}

    def add(self, tensors: dict[str, torch.Tensor], weight: float) -> None:
        for name, value in tensors.items():
            # float64 accumulation: the mean must not depend on how many clients were folded in.
            contribution = value.detach().to(torch.float64) * weight
            if name in self._sums:
                self._sums[name].add_(contribution)
                self._weights[name] += weight
            else:
                self._sums[name] = contribution
                self._weights[name] = weight

    def __bool__(self) -> bool:
        return bool(self._sums)

    def names(self) -> set[str]:
        return set(self._sums)

    def result(self, previous: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`previous` with every received tensor replaced by its weighted mean (same dtype)."""
        out = dict(previous)
        for name, total in self._sums.items():
            mean = total / self._weights[name]
            ref = previous[name]
            out[name] = (mean if ref.is_floating_point() else mean.round()).to(ref.dtype).to(ref.device)
        return out
