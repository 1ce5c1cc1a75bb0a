"""The Flower ClientApp: one SuperNode = one genefl client, running the method's client half.

A node finds its data in one of two ways (node config, `flower-supernode --node-config "..."`):
- benchmark partitions: `partition-id=<i> num-partitions=<n>` (+ `data-dir=<folder>` for file
  datasets, else $GENEFL_DATA): the node computes its own partition exactly as the simulator does
  for the same config and seed (n must be num_clients + num_newcomers; ids >= num_clients are
  newcomers);
- its own data: `data-file=<file.npz>` with arrays x_train (n, C, H, W) float32 (already
  normalised), y_train (n,) int, x_test, y_test, plus `partition-id=<i>` as its client id.
Optionally `state-dir=<folder>`: the client's state between rounds is also kept there, so that it
survives a restarted SuperNode and a resumed ServerApp (`node_store`); without it, it lives in
Flower's per-run Context only.

Message types: query.identify, query.signature, train, train.welcome, evaluate.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import zipfile
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from ..algorithms.base import ClientEnv
from ..runtime.client_side import evaluate_and_send, received, send_signature, train_and_send, welcome_and_send
from ..runtime.first_contact import NEED_INITIAL, InitialMismatch
from ..config import Config
from ..data.datasets import SHAPES
from ..data.datasets import ClientData
from ..data.scenario import ScenarioSpec, client_data, load_for, partition_indices
from ..errors import ConfigError, DataError, GeneflError
from ..paths import checked, shown
from ..protocol.messages import ClientUpdate
from ..runtime.assembly import Assembly, assemble
from .codec import decode_store, encode_store, from_content, reply_content, resumed_from, store_from_state, store_to_state
from .node_store import NodeStore
from .runconfig import config_from_run_config

app = ClientApp()


def load_own_data(path: str, config: Config) -> ClientData:
    """A node's own data file, checked as `genefl.data.from_arrays` checks arrays (finite float
    images, integer labels in range, matching lengths, no empty split), and shaped as the config's
    dataset, whose model the server builds."""
    from ..data import from_arrays

    file = checked("data-file", path, DataError)
    try:
        with np.load(file) as f:
            arrays = [np.asarray(f[k]) for k in ("x_train", "y_train", "x_test", "y_test")]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"data-file {shown(path)}: cannot read x_train, y_train, x_test, y_test "
                        f"({type(exc).__name__}: {shown(str(exc), 100)})") from None
    shape, classes = SHAPES[config.dataset]
    data = from_arrays(*arrays, name=f"data-file {shown(path)}", num_classes=classes)
    if data.input_shape != shape:
        raise DataError(f"data-file {shown(path)}: images of shape {data.input_shape}, but dataset = "
                        f"{config.dataset!r} has {shape}")
    device = config.device
    return ClientData(data.x_train.to(device), data.y_train.to(device), data.x_test.to(device), data.y_test.to(device))


def node_integer(node, key: str, low: int, high: int) -> int:
    """An integer node-config value in low..high (`--node-config "partition-id=3"`)."""
    if key not in node:
        raise ConfigError(f"node config: {key} is missing (flower-supernode --node-config \"{key}=<n> ...\")")
    value = node[key]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"node config: {key} must be an integer, got {shown(repr(value))}")
    if not low <= value <= high:
        raise ConfigError(f"node config: {key}={value} is outside {low}..{high}")
    return value


def partition_id(node, config: Config) -> int:
    """The node's client id: 0..num_clients-1 train from round 1, the rest up to num_clients +
    num_newcomers - 1 are newcomers (-1 would otherwise index the last newcomer's partition)."""
    return node_integer(node, "partition-id", 0, config.num_clients + config.num_newcomers - 1)


@functools.lru_cache(maxsize=4)
def _partition_data(config: Config, cid: int, num_partitions: int, data_dir: str) -> ClientData:
    expected = config.num_clients + config.num_newcomers
    if num_partitions != expected:
        raise GeneflError(f"num-partitions={num_partitions}, but num_clients + num_newcomers = {expected}")
    if config.dataset == "synthetic":  # generated per client: this node's one, nothing else
        from ..data import synthetic

        return synthetic.client_data(ScenarioSpec.of(config), cid)
    dataset = load_for(dataclasses.replace(config, data_dir=data_dir))  # honours checksum_file too
    train_parts, test_parts = partition_indices(config, dataset)
    return client_data(dataset, train_parts[cid], test_parts[cid], config.device)


@functools.lru_cache(maxsize=4)
def _assembly(config: Config) -> Assembly:
    shape, classes = SHAPES[config.dataset]
    return assemble(config, shape, classes)


def client_env(context: Context, round: int, message: Message | None = None) -> tuple[ClientEnv, Any, NodeStore | None]:
    """The client's environment and half, and its on-disk store when the node has a `state-dir`."""
    config = config_from_run_config(dict(context.run_config))
    node = context.node_config
    cid = partition_id(node, config)
    if "data-file" in node:
        data = load_own_data(str(node["data-file"]), config)
    else:
        data_dir = str(node.get("data-dir", "")) or config.data_dir or os.environ.get("GENEFL_DATA", "")
        data = _partition_data(config, cid, node_integer(node, "num-partitions", 1, 1 << 31), data_dir)
    parts = _assembly(config)
    store = store_from_state(context.state)
    folder = str(node.get("state-dir", ""))
    disk = NodeStore(folder, config, cid) if folder else None
    if message is not None and not store and disk is not None:
        saved = disk.restore(context.run_id, round, resumed_from(message.content))
        store = decode_store(saved) if saved is not None else {}
    return ClientEnv(cid, round, parts.model, data, store, config, parts.spec, parts.layers), parts.client(), disk


def _handle(message: Message, context: Context, action) -> Message:
    broadcast, round = from_content(message.content)
    env, client, disk = client_env(context, round, message)
    try:
        update = action(client, env, received(env, broadcast))
    except InitialMismatch:  # ask for the tensors instead (the server resends them)
        update = ClientUpdate(meta={NEED_INITIAL: True})
    store_to_state(env.store, context.state)
    if disk is not None:
        disk.save(round, encode_store(env.store))
    return Message(reply_content(update), reply_to=message)


@app.query("identify")
def identify(message: Message, context: Context) -> Message:
    env, _, _ = client_env(context, 0)
    return Message(RecordDict({"identity": ConfigRecord({"cid": env.cid, "num_train": env.data.num_train})}), reply_to=message)


@app.query("signature")
def signature(message: Message, context: Context) -> Message:
    return _handle(message, context, lambda client, env, b: send_signature(client, env))


@app.train()
def train(message: Message, context: Context) -> Message:
    return _handle(message, context, lambda client, env, b: train_and_send(client, env, b))


@app.train("welcome")
def welcome(message: Message, context: Context) -> Message:
    return _handle(message, context, _welcome_reply)


def _welcome_reply(client, env, broadcast) -> ClientUpdate:
    curve = welcome_and_send(client, env, broadcast)
    backdoor = {"backdoor": curve.backdoor} if curve.backdoor is not None else {}
    return ClientUpdate(meta={"accs": curve.test, "val_accs": curve.val, **backdoor})


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    return _handle(message, context, lambda client, env, b: ClientUpdate(meta=evaluate_and_send(client, env, b)))
