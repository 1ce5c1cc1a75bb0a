"""What a curious server holds: every client's upload of one real round, captured through the round
loop's `on_upload` event (a `Callback`: the simulator is run as any user runs it) as the bytes the
wire format sends and as the server decoded them; and the attacked images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ... import rng
from ...config import Config, replace
from ...data.datasets import ClientData
from ...data.scenario import Scenario
from ...errors import ConfigError
from ...protocol.messages import ClientUpdate, encode
from ...runtime.events import Callback


@dataclass
class Payload:
    cid: int
    images: torch.Tensor  # (B, C, H, W) what the client held
    labels: torch.Tensor
    wire: bytes  # exactly what was sent
    update: ClientUpdate  # decoded, as the server sees it
    ledger_bytes: int  # what the run's ledger counted for this upload


class UploadCapture(Callback):
    """Every accepted training upload of a run: client id -> (its wire bytes, the server's decoded
    copy on the CPU); a client that uploads again (a later round) replaces its earlier one."""

    def __init__(self):
        self.uploads: dict[int, tuple[bytes, ClientUpdate]] = {}

    def on_upload(self, round: int, cid: int, sent: ClientUpdate, decoded: ClientUpdate) -> None:
        def copied(tensors):  # a copy: the run goes on using its own
            return {k: v.to("cpu", copy=True) for k, v in tensors.items()}

        on_cpu = ClientUpdate(copied(decoded.tensors), copied(decoded.extras), dict(decoded.meta))
        self.uploads[cid] = (encode(sent), on_cpu)


CASES = ("one_step", "local_epochs")


def local_steps(config: Config, batch: int, case: str) -> tuple[int, int, int]:
    """(batch_size, local_epochs, SGD steps) of an attacked client holding `batch` images: one step on
    all of them (`one_step`, the attack's best case), or the realistic case: `local_epochs` epochs over
    its images split into about four mini-batches (of max(2, batch // 4), at most `config.batch_size`),
    as Inverting Gradients' multi-step experiments do; B = 8 is 4 steps an epoch, B = 1 one step."""
    if case == "one_step":
        return max(batch, 2), 1, 1
    from ...protocol.training import batches

    size = min(config.batch_size, max(2, batch // 4))
    per_epoch = len(batches(batch, size, torch.Generator(), "cpu"))  # the training loop's own batching
    return size, config.local_epochs, config.local_epochs * per_epoch


def exact_payloads(config: Config, images: torch.Tensor, labels: torch.Tensor, batch: int,
                   case: str = "one_step") -> tuple[list[Payload], Any]:
    """One round of `config.method` with len(images) / batch clients holding `batch` images each;
    returns every client's upload as sent, and the simulator (for its model spec and initial weights)."""
    from ...runtime.simulator import Simulator

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
    capture = UploadCapture()
    sim = Simulator(one_step, scenario, [capture])
    result = sim.run()
    counted = {t.client: t.nbytes for t in result.ledger.transfers if t.direction == "up" and t.kind == "train"}
    payloads = [Payload(cid, c.x_train.cpu(), c.y_train.cpu(), *capture.uploads[cid], counted[cid])
                for cid, c in enumerate(clients) if cid in capture.uploads]
    return payloads, sim


def config_classes(config: Config) -> int:
    from ...data.datasets import SHAPES

    return SHAPES[config.dataset][1]


def attack_images(config: Config, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` seeded training images of the config's dataset (the same for every method)."""
    from ...data.scenario import load_for

    data = load_for(config)
    if count > len(data.y_train):
        raise ConfigError(f"--images: {count} asked for, but {config.dataset} holds {len(data.y_train)} training images")
    pick = torch.from_numpy(rng.numpy_rng(config.seed, "attack-images").choice(len(data.y_train), count, replace=False))
    return data.x_train[pick], data.y_train[pick]
