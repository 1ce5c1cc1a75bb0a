"""Local training only: no communication after the shared initialisation (a lower bound).

Every client starts from the shared seeded initial weights, which the server would have to send
once; like the other methods, the simulator counts the round-1 download, so "local" is charged one
model per client and nothing more. Each client keeps its whole model in its store.
"""

from __future__ import annotations

from ..protocol.messages import Broadcast, ClientUpdate
from .base import ClientEnv, PersonalModelClient, Strategy


class Local(Strategy):
    def init(self) -> frozenset:
        return frozenset()  # the ids of clients that already hold their initial model

    def configure_train(self, state: frozenset, round: int, cid: int) -> Broadcast:
        return self.first_contact(state, cid) or Broadcast()

    def configure_absent(self, state: frozenset, cid: int) -> Broadcast | None:
        return Broadcast() if cid in state else None  # its own model, as it stands

    def aggregate(self, state: frozenset, round: int, updates) -> frozenset:
        return state | {cid for cid, _ in updates}

    def weights(self, state: frozenset) -> dict:
        return {}  # nothing is ever aggregated

    def welcome(self, state, round, cid, hello):
        return state | {cid}, Broadcast(meta={"init": "random"})


class LocalClient(PersonalModelClient):
    def train(self, env: ClientEnv, broadcast: Broadcast) -> ClientUpdate:
        self.train_own_model(env, broadcast)
        return ClientUpdate(meta={"num_samples": env.data.num_train})
