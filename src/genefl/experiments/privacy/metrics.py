"""How well an attack did: reconstructions matched to originals (PSNR, SSIM), and a membership
attack's AUC."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...errors import ConfigError


def image_scores(original: torch.Tensor, recon: torch.Tensor) -> list[tuple[int, float, float]]:
    """Match reconstructions to originals (Hungarian, by PSNR); (recon index, psnr, ssim) per original."""
    from scipy.optimize import linear_sum_assignment

    try:
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    except ImportError:
        raise ConfigError("the attack metrics need scikit-image: pip install 'genefl[privacy]'") from None

    def scaled(a: torch.Tensor, lo: float, hi: float) -> np.ndarray:
        return ((a - lo) / (hi - lo + 1e-12)).clamp(0, 1).permute(1, 2, 0).double().numpy()

    table = np.zeros((len(original), len(recon)))
    for i, o in enumerate(original):
        lo, hi = float(o.min()), float(o.max())
        for j, r in enumerate(recon):
            table[i, j] = peak_signal_noise_ratio(scaled(o, lo, hi), scaled(r, lo, hi), data_range=1.0)
    rows, cols = linear_sum_assignment(-np.nan_to_num(table, posinf=200.0))
    scores = []
    for i, j in zip(rows, cols):
        lo, hi = float(original[i].min()), float(original[i].max())
        a, b = scaled(original[i], lo, hi), scaled(recon[j], lo, hi)
        side = min(a.shape[0], a.shape[1])
        ssim = structural_similarity(a, b, data_range=1.0, channel_axis=2, win_size=min(7, side - (1 - side % 2)))
        scores.append((int(j), float(min(table[i, j], 200.0)), float(ssim)))
    return scores


def loss_threshold_auc(model: nn.Module, x: torch.Tensor, y: torch.Tensor, is_member: np.ndarray) -> float:
    """AUC of the loss-threshold attack (Yeom et al. 2018): a lower loss says "member"."""
    from sklearn.metrics import roc_auc_score

    model.eval()
    with torch.no_grad():
        losses = nn.functional.cross_entropy(model(x), y, reduction="none").cpu().numpy()
    return float(roc_auc_score(is_member, -losses))
