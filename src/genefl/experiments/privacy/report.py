"""`genefl attack`: every method's exact uploads attacked on the same images, written as attack.json
and one image grid per method."""

from __future__ import annotations

from typing import Any

import torch

from ...config import Config, replace
from ...errors import ConfigError
from .attacks import run_attack, signature_leak
from .capture import attack_images
from .membership import membership_auc


def save_grid(originals: torch.Tensor, reconstructions: torch.Tensor, path, title: str) -> None:
    """Originals above, reconstructions below, each scaled to its original's range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n + 0.4, 2.8), squeeze=False)
    for i in range(n):
        lo, hi = float(originals[i].min()), float(originals[i].max())
        for row, image in enumerate((originals[i], reconstructions[i])):
            shown = ((image - lo) / (hi - lo + 1e-12)).clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy()
            axes[row][i].imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1)
            axes[row][i].axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def attack_methods(config: Config, methods: list, batch: int, images: int, attack: str, iterations: int,
                   restarts: int, out, membership: bool = False, case: str = "one_step") -> list[dict[str, Any]]:
    """`genefl attack`: every method's exact uploads attacked on the same images; writes
    DIR/attack.json (one record per method) and DIR/grid_<method>.png. `methods`: names, or
    `comparison.Variant`s (a method with option overrides, recorded under its label)."""
    import json
    from pathlib import Path

    from ..comparison import Variant

    if images < batch or images % batch:
        raise ConfigError(f"--images: must be a positive multiple of --batch ({batch}), got {images}")
    x, y = attack_images(config, images)
    out = Path(out)
    variants = [m if isinstance(m, Variant) else Variant(m, m, {}) for m in methods]
    records = []
    for v in variants:
        result = run_attack(replace(config, method=v.method, **v.overrides), x, y, batch, attack, iterations, restarts, case)
        recon = torch.cat([c["reconstructions"] for c in result["clients"]])
        save_grid(x, recon, out / f"grid_{v.folder}.png", f"{v.label}: {attack}, batch {batch}, PSNR {result['psnr'] or 0:.1f} dB")
        records.append({k: result[k] for k in ("attack", "case", "steps", "batch", "psnr", "ssim", "label_acc",
                                               "images_attacked", "per_image", "payload_bytes")}
                       | {"method": v.label, "iterations": iterations, "restarts": restarts})
    if any(v.method in ("genefl", "pacfl") for v in variants):  # their clients also send a data signature
        records.append({"method": "genefl/pacfl signature", **signature_leak(config)})
    if membership:
        records.extend(membership_auc(config, tuple(v.method for v in variants if not v.overrides)))
    (out / "attack.json").write_text(json.dumps(records, indent=1))
    return records
