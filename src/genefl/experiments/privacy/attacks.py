"""Gradient inversion of a captured upload (DLG, iDLG, Inverting Gradients' cosine attack; see the
package docstring), and what GENE-FL's and PACFL's one-shot signature gives away."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ... import rng
from ...config import Config
from ...errors import ConfigError
from ...protocol.messages import ClientUpdate
from .capture import CASES, Payload, exact_payloads, local_steps
from .metrics import image_scores

ATTACKS = ("dlg", "idlg", "cosine")


def observed_gradient(update: ClientUpdate, initial: dict[str, torch.Tensor], trainable: set[str], lr: float) -> dict[str, torch.Tensor]:
    """(θ_sent − θ_received) / lr for every uploaded trainable tensor: one SGD step's gradient (on the
    device of the server's model; decoded uploads are on the CPU)."""
    return {k: (initial[k] - v.to(initial[k].device)) / lr for k, v in update.tensors.items()
            if k in trainable and v.is_floating_point()}


def labels_from_bias(grads: dict[str, torch.Tensor], head_bias: str | None, batch: int) -> torch.Tensor | None:
    """iDLG: the head's bias gradient is mean(softmax − one-hot); its most negative entries are the labels."""
    if head_bias is None or head_bias not in grads:
        return None
    return torch.argsort(grads[head_bias])[:batch].sort().values


def gradients_of(model: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], keys: list[str],
                 x: torch.Tensor, y_soft: torch.Tensor) -> list[torch.Tensor]:
    out = functional_call(model, ({**params}, buffers), (x,))
    loss = -(y_soft * torch.log_softmax(out, dim=1)).sum(dim=1).mean()
    return torch.autograd.grad(loss, [params[k] for k in keys], create_graph=True)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def analytic_start(target: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], shape: tuple) -> torch.Tensor | None:
    """A fully connected first layer gives a single image away exactly (Phong et al. 2018; discussed
    in Inverting Gradients): dL/dW = δ xᵀ and dL/db = δ, so x = dW[i] / db[i] for any unit i that
    fired. Used as the first restart's starting point when the upload holds that layer's gradients."""
    if shape[0] != 1:
        return None
    for key, grad in target.items():
        bias = key[: -len("weight")] + "bias"
        if key.endswith("weight") and grad.dim() == 2 and bias in target and grad.shape[1] == math.prod(shape[1:]):
            unit = int(target[bias].abs().argmax())
            if float(target[bias][unit].abs()) > 0:
                return (grad[unit] / target[bias][unit]).reshape(shape).detach()
    return None


def invert(model: nn.Module, weights: dict[str, torch.Tensor], target: dict[str, torch.Tensor], shape: tuple, classes: int,
           attack: str, labels: torch.Tensor | None, iterations: int, restarts: int, seed: int, tv: float = 1e-2):
    """(images, labels, gradient distance) of the best restart; the attack runs on the model's device
    (`config.device`), its random starts drawn on the CPU so that every device starts from the same
    images; images and labels come back on the CPU."""
    device = next(model.parameters()).device
    weights = {k: v.to(device) for k, v in weights.items()}
    target = {k: v.to(device) for k, v in target.items()}
    labels = labels.to(device) if labels is not None else None
    model.eval()  # BatchNorm statistics as sent; the attacked step itself used train mode (a documented gap)
    params = {k: v.detach().clone().requires_grad_(k in target) for k, v in weights.items()
              if k in dict(model.named_parameters())}
    buffers = {k: v for k, v in weights.items() if k not in params}
    keys = sorted(target)
    scale = float(sum((target[k] ** 2).sum() for k in keys)) or 1.0
    best = None
    first = analytic_start(target, weights, shape)
    for restart in range(restarts):
        gen = rng.generator(seed, "attack", restart)
        x = (first.clone() if first is not None and restart == 0 else torch.randn(shape, generator=gen).to(device)).requires_grad_(True)
        label_logits = torch.randn(shape[0], classes, generator=gen).to(device).requires_grad_(labels is None)
        variables = [x] + ([label_logits] if labels is None else [])

        def soft_labels():
            return torch.softmax(label_logits, 1) if labels is None else nn.functional.one_hot(labels, classes).float()

        def loss_fn():
            grads = gradients_of(model, params, buffers, keys, x, soft_labels())
            if attack == "cosine":
                dot = sum((g * target[k]).sum() for g, k in zip(grads, keys))
                norm = torch.sqrt(sum((g * g).sum() for g in grads)) * torch.sqrt(sum((target[k] ** 2).sum() for k in keys))
                return 1 - dot / (norm + 1e-12) + tv * total_variation(x)
            # relative squared distance: the raw one is ~1e-6 here, below L-BFGS's stopping tolerances
            return sum(((g - target[k]) ** 2).sum() for g, k in zip(grads, keys)) / scale

        if attack == "cosine":
            opt = torch.optim.Adam(variables, lr=0.1)
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(iterations * f) for f in (0.375, 0.625, 0.875)], 0.1)
            for _ in range(iterations):
                opt.zero_grad()
                value = loss_fn()
                value.backward()
                x.grad.sign_()  # signed gradients, as in Inverting Gradients
                opt.step()
                sched.step()
        else:
            opt = torch.optim.LBFGS(variables, lr=1, max_iter=iterations, history_size=100, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                value = loss_fn()
                value.backward()
                return value

            opt.step(closure)
        grads = gradients_of(model, params, buffers, keys, x, soft_labels())
        distance = float(sum(((g.detach() - target[k]) ** 2).sum() for g, k in zip(grads, keys))) / scale
        recovered = soft_labels().argmax(1).detach()
        if best is None or (math.isfinite(distance) and distance < best[2]):
            best = (x.detach().cpu(), recovered.cpu(), distance)
    return best


def attack_payload(payload: Payload, sim, attack: str, iterations: int, restarts: int, seed: int,
                   target: dict[str, torch.Tensor] | None = None, steps: int = 1) -> dict[str, Any]:
    """One client's upload attacked; `target` replaces the observed gradient (the negative control)."""
    model = sim.model
    trainable = {k for k, p in model.named_parameters()}
    # several steps: the update read as one averaged gradient, as Inverting Gradients attacks it
    grads = observed_gradient(payload.update, sim.strategy.initial, trainable, sim.config.lr * steps) if target is None else target
    if not grads:  # nothing trainable was uploaded (a FedLP client can send no layer): nothing to invert
        return {"cid": payload.cid, "attacked_layers": 0, "psnr": [None] * len(payload.labels),
                "ssim": [None] * len(payload.labels), "reconstructions": torch.zeros_like(payload.images)}
    head = sim.layers[-1]
    head_bias = next((k for k in head.param_keys if k.endswith("bias")), None)
    batch = len(payload.labels)
    labels = labels_from_bias(grads, head_bias, batch) if attack in ("idlg", "cosine") else None
    shape = tuple(payload.images.shape)
    images, recovered, distance = invert(model, sim.strategy.initial, grads, shape, sim.scenario.num_classes, attack,
                                         labels, iterations, restarts, seed)
    scores = image_scores(payload.images, images)
    order = [j for j, _, _ in scores]
    true = sorted(payload.labels.tolist())
    label_acc = sum(1 for a, b in zip(sorted(recovered.tolist()), true) if a == b) / batch
    return {"cid": payload.cid, "attacked_layers": len(grads), "gradient_distance": distance,
            "psnr": [s for _, s, _ in scores], "ssim": [s for _, _, s in scores], "label_acc": label_acc,
            "reconstructions": images[order]}


def run_attack(config: Config, images: torch.Tensor, labels: torch.Tensor, batch: int, attack: str = "idlg",
               iterations: int = 100, restarts: int = 2, case: str = "one_step") -> dict[str, Any]:
    """Every client's exact upload attacked; means over the attacked images and per-image values."""
    if attack not in ATTACKS:
        raise ConfigError(f"attack: must be one of {', '.join(ATTACKS)}, got {attack!r}")
    if batch < 1:
        raise ConfigError(f"batch: must be >= 1, got {batch}")
    if case not in CASES:
        raise ConfigError(f"case: must be one of {', '.join(CASES)}, got {case!r}")
    payloads, sim = exact_payloads(config, images, labels, batch, case)
    steps = local_steps(config, batch, case)[2]
    results = [attack_payload(p, sim, attack, iterations, restarts, config.seed, steps=steps) for p in payloads]
    psnr = [v for r in results for v in r["psnr"]]
    ssim = [v for r in results for v in r["ssim"]]
    attacked = [v for v in psnr if v is not None]
    label_accs = [r["label_acc"] for r in results if "label_acc" in r]
    return {"method": config.method, "attack": attack, "case": case, "steps": steps, "batch": batch,
            "psnr": float(np.mean(attacked)) if attacked else None,
            "ssim": float(np.mean([v for v in ssim if v is not None])) if attacked else None,
            "label_acc": float(np.mean(label_accs)) if label_accs else None, "images_attacked": len(attacked),
            "per_image": {"psnr": psnr, "ssim": ssim}, "payload_bytes": [p.ledger_bytes for p in payloads],
            "clients": results, "payloads": payloads}


def signature_leak(config: Config, clients: int = 4, images: int = 4) -> dict[str, Any]:
    """What the Stage-0 signature (the top-p left singular vectors U of a client's data, sent by
    GENE-FL and PACFL clients before round 1) gives away: for `images` images of each of the first
    `clients` training clients, PSNR/SSIM of x against (a) its projection U Uᵀ x onto the sent
    subspace (how much of the image the subspace holds) and (b) the best single sent vector, sign and
    scale fitted (the closest thing to an image the server holds without any prior)."""
    from ...algorithms.clustering import signature
    from ...data.scenario import build_scenario

    scenario = build_scenario(config)
    originals, projected, single = [], [], []
    for cid in range(min(clients, scenario.num_clients)):
        data = scenario.clients[cid].x_train.cpu()
        u = signature(data, config.clustering.p, rng.generator(config.seed, "client", cid, 0, "signature"))  # (d, p)
        for x in data[:images]:
            flat = x.reshape(-1)
            coeffs = u.T @ flat  # (p,)
            originals.append(x)
            projected.append((u @ coeffs).reshape(x.shape))
            best = int(coeffs.abs().argmax())
            single.append((u[:, best] * coeffs[best]).reshape(x.shape))
    originals = torch.stack(originals)
    out = {"case": "signature", "p": config.clustering.p, "images": len(originals)}
    for name, recon in (("projection", torch.stack(projected)), ("single_vector", torch.stack(single))):
        scores = [image_scores(o[None], r[None])[0] for o, r in zip(originals, recon)]  # image by image, no matching
        out[name] = {"psnr": float(np.mean([p for _, p, _ in scores])), "ssim": float(np.mean([q for _, _, q in scores])),
                     "per_image_psnr": [p for _, p, _ in scores]}
    return out
