"""Gradient inversion against exactly what a method's clients send: the attack harness.

An honest-but-curious server holds a client's upload and the model it broadcast, and tries to
recover the client's images. The upload is not re-implemented here: `exact_payloads` runs the real
simulator for one round on a scenario whose clients each hold the attacked batch, records every
reply as the bytes the wire format sends (`genefl.protocol.messages.encode`, what the ledger counts and
Flower ships) and decodes them as the server would. So a method that uploads a learnGene of two
layers is attacked on those two layers only, and FedLP on the layers it happened to send.

Also `signature_leak`: what GENE-FL's and PACFL's one-shot SVD signature gives away; and
`membership_auc`: a loss-threshold membership inference on what a newcomer is handed.

Threat cases (`local_steps`): `one_step`, the attack's best case, one local step of plain SGD on a
batch of B images; the update is then exactly lr x the gradient of the uploaded layers (GENE-FL's,
FedProx's and SCAFFOLD's correction terms are zero at the first step). `local_epochs`, the realistic
case: the configured local epochs over the B images in about four mini-batches each (so several
steps once B >= 4; with B = 1 and one local epoch it is the best case again); the update is read as
lr x steps x one averaged gradient, as Inverting Gradients attacks multi-step updates.
SCAFFOLD's Δc carries the same gradient and is not attacked separately.

Attacks (written here: `breaching` 0.1.2, that group's framework on PyPI, requires torchvision and
imports it when loaded, `breaching.cases.models.model_preparation`; PyPI's torchvision does not
import beside the torch 2.13 CPU build genefl installs, so breaching cannot run beside genefl):
- DLG (Zhu et al., NeurIPS 2019): dummy images and soft labels optimised with L-BFGS so that their
  gradient matches the observed one in squared L2 distance;
- iDLG (Zhao et al., 2020): the same with the labels read first from the head's bias gradient
  (softmax − one-hot is negative only at a present label; for B > 1 the B most negative entries);
- cosine (Geiping et al., NeurIPS 2020, "Inverting Gradients"): 1 − cosine similarity of the
  gradients plus total variation, optimised with Adam and a decaying step, labels as in iDLG.
Each attack runs `restarts` times from seeded random images and keeps the best gradient match (the
first restart starts from the analytic recovery when the upload holds a fully connected first
layer's gradients: `analytic_start`);
iterations are bounded (`iterations`). Metrics per image (after matching reconstructions to
originals by PSNR with the Hungarian method): PSNR and SSIM from scikit-image, on images scaled to
the original's range, and label recovery accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from .. import rng
from ..config import Config, replace
from ..data.datasets import ClientData
from ..data.scenario import Scenario
from ..errors import ConfigError
from ..protocol.compression import decode_message
from ..protocol.messages import ClientUpdate, decode, encode

ATTACKS = ("dlg", "idlg", "cosine")


@dataclass
class Payload:
    cid: int
    images: torch.Tensor  # (B, C, H, W) what the client held
    labels: torch.Tensor
    wire: bytes  # exactly what was sent
    update: ClientUpdate  # decoded, as the server sees it
    ledger_bytes: int  # what the run's ledger counted for this upload


CASES = ("one_step", "local_epochs")


def local_steps(config: Config, batch: int, case: str) -> tuple[int, int, int]:
    """(batch_size, local_epochs, SGD steps) of an attacked client holding `batch` images: one step on
    all of them (`one_step`, the attack's best case), or the realistic case: `local_epochs` epochs over
    its images split into about four mini-batches (of max(2, batch // 4), at most `config.batch_size`),
    as Inverting Gradients' multi-step experiments do; B = 8 is 4 steps an epoch, B = 1 one step."""
    if case == "one_step":
        return max(batch, 2), 1, 1
    from ..protocol.training import batches

    size = min(config.batch_size, max(2, batch // 4))
    per_epoch = len(batches(batch, size, torch.Generator(), "cpu"))  # the training loop's own batching
    return size, config.local_epochs, config.local_epochs * per_epoch


def exact_payloads(config: Config, images: torch.Tensor, labels: torch.Tensor, batch: int,
                   case: str = "one_step") -> tuple[list[Payload], Any]:
    """One round of `config.method` with len(images) / batch clients holding `batch` images each;
    returns every client's upload as sent, and the simulator (for its model spec and initial weights)."""
    from ..runtime.simulator import Simulator

    if config.method == "local":
        raise ConfigError("method: 'local' sends nothing upward; there is no upload to attack")
    n = len(images) // batch
    on = images.to(config.device), labels.to(config.device)  # where the simulator trains
    clients = [ClientData(on[0][i * batch:(i + 1) * batch], on[1][i * batch:(i + 1) * batch],
                          on[0][i * batch:(i + 1) * batch], on[1][i * batch:(i + 1) * batch]) for i in range(n)]
    scenario = Scenario(tuple(images.shape[1:]), int(config_classes(config)), clients, n, {}, config.dataset)
    size, epochs, _ = local_steps(config, batch, case)
    one_step = replace(config, rounds=1, num_clients=n, num_newcomers=0, newcomer_rounds=[], batch_size=size,
                       local_epochs=epochs, participation=1.0, dropout=0.0, momentum=0.0, weight_decay=0.0,
                       min_samples=max(config.clustering.p, 1), first_contact="tensors", checkpoint_every=0)
    wires: dict[int, bytes] = {}
    received: dict[int, ClientUpdate] = {}  # what each client started from: a codec's changes are relative to it
    sim = Simulator(one_step, scenario)
    train = sim.clients.train

    def recording(round, broadcasts):  # the simulator's own transport, teeing what each client sends
        for cid, update in train(round, broadcasts):
            wires[cid] = encode(update)
            received[cid] = decode_message(broadcasts[cid])
            yield cid, update

    sim.clients.train = recording
    result = sim.run()
    counted = {t.client: t.nbytes for t in result.ledger.transfers if t.direction == "up" and t.kind == "train"}
    # the server's view: the wire decoded, and a payload codec's packed changes added to what was sent
    payloads = [Payload(cid, c.x_train.cpu(), c.y_train.cpu(), wires[cid],
                        decode_message(decode(wires[cid]), received[cid], device="cpu"), counted[cid])
                for cid, c in enumerate(clients) if cid in wires]
    return payloads, sim


def config_classes(config: Config) -> int:
    from ..data.datasets import SHAPES

    return SHAPES[config.dataset][1]


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


__all__ = ["ATTACKS", "Payload", "attack_payload", "exact_payloads", "run_attack"]


def signature_leak(config: Config, clients: int = 4, images: int = 4) -> dict[str, Any]:
    """What the Stage-0 signature (the top-p left singular vectors U of a client's data, sent by
    GENE-FL and PACFL clients before round 1) gives away: for `images` images of each of the first
    `clients` training clients, PSNR/SSIM of x against (a) its projection U Uᵀ x onto the sent
    subspace (how much of the image the subspace holds) and (b) the best single sent vector, sign and
    scale fitted (the closest thing to an image the server holds without any prior)."""
    from ..algorithms.clustering import signature
    from ..data.scenario import build_scenario

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


def membership_auc(config: Config, methods: tuple[str, ...] = ("fedavg", "genefl"), limit: int = 2000) -> list[dict[str, Any]]:
    """The newcomer side (Yeom et al. 2018, loss threshold): is a sample in some training client's
    data? Scored on the model a newcomer is handed (the last newcomer's start, other layers fresh as
    it gets them): members are training clients' training samples, non-members the held-out test
    splits, equal counts (at most `limit` each, seeded); AUC of −loss (0.5 = no leak)."""
    from ..data.scenario import build_scenario
    from ..runtime.simulator import Simulator
    from .starts import StartRecorder
    from ..protocol.training import load_into

    scenario = build_scenario(config)
    train = [scenario.clients[c] for c in range(scenario.num_clients)]
    members_x, members_y = torch.cat([c.x_train for c in train]), torch.cat([c.y_train for c in train])
    held_x = torch.cat([c.x_test for c in scenario.clients])
    held_y = torch.cat([c.y_test for c in scenario.clients])
    n = min(limit, len(members_y), len(held_y))
    gen = rng.numpy_rng(config.seed, "membership")
    pick_m, pick_h = gen.choice(len(members_y), n, replace=False), gen.choice(len(held_y), n, replace=False)
    x = torch.cat([members_x[pick_m], held_x[pick_h]])
    y = torch.cat([members_y[pick_m], held_y[pick_h]])
    is_member = np.r_[np.ones(n), np.zeros(n)]
    records = []
    for method in methods:
        run_config = replace(config, method=method)
        recorder = StartRecorder(None)
        sim = Simulator(run_config, scenario, [recorder])
        sim.run()
        if not recorder.starts:
            raise ConfigError("membership: the run had no newcomer (set num_newcomers >= 1)")
        cid = max(recorder.starts, key=lambda c: recorder.starts[c]["round"])
        model = sim.spec.build(config.seed, "newcomer", cid).to(config.device)
        load_into(model, recorder.starts[cid]["tensors"])
        records.append({"case": "membership", "method": method, "start": recorder.starts[cid]["meta"].get("init", "method"),
                        "arrival_round": recorder.starts[cid]["round"], "samples_each": n,
                        "auc": loss_threshold_auc(model, x, y, is_member)})
    return records


def loss_threshold_auc(model: nn.Module, x: torch.Tensor, y: torch.Tensor, is_member: np.ndarray) -> float:
    """AUC of the loss-threshold attack (Yeom et al. 2018): a lower loss says "member"."""
    from sklearn.metrics import roc_auc_score

    model.eval()
    with torch.no_grad():
        losses = nn.functional.cross_entropy(model(x), y, reduction="none").cpu().numpy()
    return float(roc_auc_score(is_member, -losses))


def attack_images(config: Config, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` seeded training images of the config's dataset (the same for every method)."""
    from ..data.scenario import load_for

    data = load_for(config)
    if count > len(data.y_train):
        raise ConfigError(f"--images: {count} asked for, but {config.dataset} holds {len(data.y_train)} training images")
    pick = torch.from_numpy(rng.numpy_rng(config.seed, "attack-images").choice(len(data.y_train), count, replace=False))
    return data.x_train[pick], data.y_train[pick]


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

    from .comparison import Variant

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
