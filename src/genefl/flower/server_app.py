"""The Flower ServerApp: the same `RoundLoop` and Strategy as the simulator, reaching clients
through Flower messages instead of in-process calls.

Nodes are keyed by their partition id (asked once with `query.identify`), never by Flower's random
node ids. A node that errors, disappears or misses `flower.round_timeout` is dropped from that round
and the run goes on; a reply that is malformed (undecodable, wrong keys, shapes, dtypes, NaN/inf) is
rejected and never aggregated. Both are recorded in results.json (`rounds[].notes`). A node not
connected when a round starts is not sampled that round: one stopped and restarted is a return, one
stopped for good a departure, one started late a newcomer's arrival (`genefl.protocol.population`).

Like `genefl run`, the ServerApp checkpoints the loop every `checkpoint_every` rounds (to
`flower.out/checkpoint.pt`); a new `flwr run` with `flower.resume = true` and the same config
continues from it. Client state stays on the SuperNodes (see `node_store`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from ..data.datasets import SHAPES
from ..runtime.first_contact import asks_for_initial
from ..errors import GeneflError
from ..protocol.messages import Broadcast, ClientUpdate, accuracy_list, accuracy_value, check_fields, encode
from ..protocol.newcomer import NewcomerCurve
from ..results import ResultWriter
from ..runtime import checkpoint
from ..runtime.loop import RoundLoop
from ..runtime.assembly import assemble
from ..data.scenario import arrival_rounds
from ..protocol.population import refuse_in_flower
from .codec import from_content, to_content
from .runconfig import config_from_run_config

log = logging.getLogger("genefl.flower")
app = ServerApp()


def send_and_receive(grid: Grid, messages: list[Message], timeout: float) -> list[Message]:
    """What `Grid.send_and_receive` does, polling for the replies after 0.05 s, then twice as long each
    time up to 1 s, instead of every 3 s: a round waits on several exchanges, and replies that arrive
    together with a fixed 3-second poll cost up to 3 s each."""
    waiting = set(grid.push_messages(messages))
    replies: list[Message] = []
    deadline, pause = time.monotonic() + timeout, 0.05
    while waiting:
        for reply in grid.pull_messages(list(waiting)):
            replies.append(reply)
            waiting.discard(reply.metadata.reply_to_message_id)
        left = deadline - time.monotonic()
        if not waiting or left <= 0:
            break
        time.sleep(min(pause, left))
        pause = min(2 * pause, 1.0)
    return replies


class FlowerClients:
    """The loop's transport over a Flower Grid."""

    def __init__(self, grid: Grid, timeout: float, resumed_from: int | None = None):
        self.grid, self.timeout = grid, timeout
        self.resumed_from = resumed_from  # told to every client: where a client's saved state must come from
        self.node_of: dict[int, int] = {}  # partition id -> Flower node id
        self.known: set[int] = set()  # node ids already identified
        self.failures: dict[int, str] = {}

    def discover(self) -> None:
        new = [n for n in self.grid.get_node_ids() if n not in self.known]
        if not new:
            return
        messages = [Message(RecordDict(), dst_node_id=n, message_type="query.identify") for n in new]
        for reply in send_and_receive(self.grid, messages, self.timeout):
            if reply.has_error():
                continue
            self.known.add(reply.metadata.src_node_id)
            self.node_of[int(reply.content["identity"]["cid"])] = reply.metadata.src_node_id

    def wait_for(self, ids: list[int], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self.discover()
            missing = [c for c in ids if c not in self.node_of]
            if not missing or time.monotonic() > deadline:
                if missing:
                    log.warning("starting without clients %s: no SuperNode reported them", missing)
                return
            time.sleep(1.0)

    def available(self, ids: list[int]) -> list[int]:
        """The ids whose SuperNode is connected now (a restarted node, under its new Flower node id,
        is identified again here)."""
        self.discover()
        online = set(self.grid.get_node_ids())
        return [c for c in ids if self.node_of.get(c) in online]

    def _exchange(self, message_type: str, round: int, payloads: dict[int, Broadcast]) -> dict[int, ClientUpdate]:
        """Send each client its payload; decoded replies by client id (failures recorded)."""
        online = set(self.grid.get_node_ids())
        wire_of: dict[int, bytes] = {}  # encode each distinct broadcast object once
        messages, cid_of = [], {}
        for cid, payload in payloads.items():
            node = self.node_of.get(cid)
            if node is None or node not in online:
                self.failures[cid] = "node offline"
                continue
            wire = wire_of.setdefault(id(payload), encode(payload))
            messages.append(Message(to_content(wire, round, self.resumed_from), dst_node_id=node,
                                    message_type=message_type))
            cid_of[node] = cid
        replies: dict[int, ClientUpdate] = {}
        for reply in send_and_receive(self.grid, messages, self.timeout) if messages else []:
            cid = cid_of.get(reply.metadata.src_node_id)
            if cid is None:
                continue
            if reply.has_error():
                self.failures[cid] = f"client error: {reply.error.reason}"[:300]
                continue
            try:
                update, _ = from_content(reply.content)
                if not isinstance(update, ClientUpdate):
                    raise GeneflError("malformed payload: not a client update")
                replies[cid] = update
            except GeneflError as exc:
                self.failures[cid] = str(exc)
        for cid in payloads:
            if cid not in replies and cid not in self.failures:
                self.failures[cid] = f"no reply within {self.timeout:g} s"
        return dict(sorted(replies.items()))  # client-id order: the simulator's aggregation order

    def signatures(self, round: int, ids: list[int]) -> dict[int, ClientUpdate]:
        return self._exchange("query.signature", round, {cid: Broadcast() for cid in ids})

    def train(self, round: int, broadcasts: dict[int, Broadcast]) -> Iterator[tuple[int, ClientUpdate]]:
        yield from self._exchange("train", round, broadcasts).items()

    def welcome(self, round: int, cid: int, broadcast: Broadcast) -> NewcomerCurve | ClientUpdate | None:
        reply = self._exchange("train.welcome", round, {cid: broadcast}).get(cid)
        if asks_for_initial(reply):
            return reply
        if reply is None or not self._fields_ok(cid, reply, WELCOME_FIELDS):
            return None
        if not reply.meta["accs"] or len(reply.meta["val_accs"]) not in (0, len(reply.meta["accs"]) - 1):
            self.failures[cid] = "rejected reply: accs and val_accs do not describe one fine-tuning"
            return None
        backdoor = reply.meta.get("backdoor")
        return NewcomerCurve([float(a) for a in reply.meta["accs"]], [float(a) for a in reply.meta["val_accs"]],
                             float(backdoor) if backdoor is not None else None)

    def depart(self, round: int, cid: int) -> None:
        raise GeneflError("population.departures: simulator only")  # refused at start: on Flower, nodes leave

    def evaluate(self, round: int, broadcasts: dict[int, Broadcast]) -> dict[int, dict[str, float]]:
        replies = self._exchange("evaluate", round, broadcasts).items()
        return {cid: u if asks_for_initial(u) else {k: float(v) for k, v in u.meta.items()} for cid, u in replies
                if asks_for_initial(u) or self._fields_ok(cid, u, EVALUATE_FIELDS)}  # an ask: the loop resends

    def evaluate_absent(self, round: int, models: dict[int, Broadcast]) -> dict[int, dict[str, float]]:
        return {}  # an absent node is not connected: it cannot be asked (results.json: acc_absent null)

    def local_baseline(self, round: int, cid: int) -> float | None:
        raise GeneflError("population.local_baseline: simulator only")  # refused at start

    def _fields_ok(self, cid: int, reply: ClientUpdate, fields: dict) -> bool:
        if isinstance(reply.meta, dict) and "backdoor" in reply.meta:  # only in backdoor-attacked runs
            fields = {**fields, **BACKDOOR_FIELD}
        try:
            check_fields(reply.meta, fields)
        except GeneflError as exc:
            self.failures[cid] = str(exc)
            return False
        return True


WELCOME_FIELDS = {"accs": (accuracy_list, "a list of accuracies"), "val_accs": (accuracy_list, "a list of accuracies")}
EVALUATE_FIELDS = {"acc": (accuracy_value, "an accuracy in [0, 1]")}
BACKDOOR_FIELD = {"backdoor": (accuracy_value, "a share in [0, 1]")}


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = config_from_run_config(dict(context.run_config))
    refuse_in_flower(config)  # on Flower, departures and returns are what the nodes do
    shape, classes = SHAPES[config.dataset]
    parts = assemble(config, shape, classes)
    strategy = parts.strategy()
    out = Path(config.flower.out).expanduser()
    resume = checkpoint_to_resume(config, out)
    clients = FlowerClients(grid, config.flower.round_timeout, resume["round"] if resume else None)
    clients.wait_for(list(range(config.num_clients)), config.flower.node_wait)
    loop = RoundLoop(config, strategy, clients, parts.model_bytes, config.num_clients, arrival_rounds(config),
                     [ResultWriter(out)])
    path, identity = out / checkpoint.FILE, checkpoint.identity(config)
    result = loop.run({"config": config, "layers": parts.layers, "model": parts.spec.name}, resume,
                      lambda snapshot: checkpoint.save(path, {**snapshot, "config": identity}))
    save_weights(result.final_weights, out / "weights.pt")
    path.unlink(missing_ok=True)  # the run is complete: results.json is its record
    log.warning("genefl: %s finished %d rounds; results in %s", config.method, len(result.rounds), out / "results.json")


def checkpoint_to_resume(config, out: Path) -> dict | None:
    """With `flower.resume`, the checkpoint in `out` (which must be this config's); without it, None,
    refusing an `out` that holds another run, as `genefl run --out` does."""
    path = out / checkpoint.FILE
    if not config.flower.resume:
        if (out / "results.json").exists() or path.exists():
            raise GeneflError(f"flower.out {out} already holds a run; continue it with flower.resume=true "
                              "or choose another flower.out")
        return None
    if not path.is_file():
        finished = (out / "results.json").exists()
        raise GeneflError(f"flower.resume: no checkpoint in {out}" + (" (that run finished)" if finished else ""))
    return checkpoint.load(path, config)  # refuses a checkpoint of another config, naming what differs


def save_weights(weights, path: Path) -> None:
    import torch

    torch.save(weights, path)
