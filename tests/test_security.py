"""Attacks (`genefl.protocol.adversary`) and robust aggregation (`genefl.protocol.robust`): each aggregator against numbers
computed by hand on 2-3-element tensors, each attack against the honest update of the same client,
and small seeded digits runs in which an attack hurts an undefended FedAvg and a defence restores it."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from conftest import REPO, small_config
from genefl.protocol import adversary
from genefl.protocol.adversary import alie, alie_z, attackers, collude, poisoned, stamp
from genefl.algorithms.base import ClientEnv
from genefl.runtime.client_side import train_and_send
from genefl.config import DefenceOptions, load_config
from genefl import rng
from genefl.algorithms import clustering
from genefl.data.scenario import build_scenario, load_for
from genefl.errors import ConfigError, GeneflError
from genefl.protocol.messages import Broadcast, ClientUpdate
from genefl.results import build_results
from genefl.protocol.reputation import Reputation
from genefl.protocol.robust import Combiner, pairwise_distances
from genefl.runtime.assembly import assemble
from genefl.runtime.simulator import Simulator


def combine(updates, sent=None, **options):
    """Feed (cid, {"w": values}, weight) through a Combiner; returns (w, notes)."""
    notes: list[str] = []
    combiner = Combiner(DefenceOptions(**options), notes, "round 1", lambda cid: sent)
    for cid, values, weight in updates:
        combiner.add(cid, {"w": torch.tensor(values)}, weight)
    return combiner.result({"w": torch.zeros(len(updates[0][1]))})["w"], notes


# ---- aggregators, by hand ----------------------------------------------------------------------------
def test_median_is_per_coordinate_and_unweighted_with_the_middle_pair_averaged():
    w, notes = combine([(0, [1.0, 10.0, -1.0], 1), (1, [2.0, 20.0, -2.0], 5), (2, [3.0, 30.0, -3.0], 1),
                        (3, [100.0, -100.0, 50.0], 1)], aggregator="median")
    assert w.tolist() == [2.5, 15.0, -1.5] and not notes  # (2 + 3) / 2, (10 + 20) / 2, (-2 - 1) / 2
    w, _ = combine([(0, [1.0, 9.0], 1), (1, [5.0, -4.0], 1), (2, [2.0, 0.0], 1)], aggregator="median")
    assert w.tolist() == [2.0, 0.0]
    w, notes = combine([(0, [1.0, 9.0], 1), (1, [5.0, -4.0], 3)], aggregator="median")
    assert w.tolist() == [3.0, 2.5]  # a median of two is their unweighted mean, and says so
    assert notes == ["round 1: median of 2 updates is their plain mean (it outvotes nothing)"]


def test_trimmed_mean_drops_floor_trim_n_at_each_end_and_says_when_it_trims_nothing():
    five = [(0, [1.0, -50.0], 1), (1, [2.0, 0.0], 1), (2, [3.0, 1.0], 1), (3, [4.0, 2.0], 9), (4, [100.0, 3.0], 1)]
    w, notes = combine(five, aggregator="trimmed_mean", trim=0.2)  # k = 1 of 5 at each end
    assert w.tolist() == pytest.approx([3.0, 1.0]) and not notes  # mean(2, 3, 4), mean(0, 1, 2)
    w, notes = combine(five, aggregator="trimmed_mean", trim=0.1)  # 0.1 x 5 < 1: nothing trimmed
    assert w.tolist() == pytest.approx([22.0, -8.8])  # the plain, unweighted mean
    assert notes == ["round 1: trimmed_mean of 5 updates with trim 0.1 trims nothing (their plain mean)"]


KRUM = [(0, [0.0, 0.0], 1), (1, [1.0, 0.0], 2), (2, [0.0, 2.0], 1), (3, [1.0, 1.0], 1), (4, [10.0, 10.0], 1)]
# squared distances to the n - f - 2 = 2 nearest (f = 1): client 0: 1 + 2 = 3, client 1: 1 + 1 = 2,
# client 2: 2 + 4 = 6, client 3: 1 + 2 = 3, client 4: 162 + 164 = 326


def test_krum_keeps_the_update_nearest_its_neighbours():
    w, notes = combine(KRUM, aggregator="krum", byzantine=1)
    assert w.tolist() == [1.0, 0.0]
    assert notes == ["round 1: krum left out clients 0, 2, 3, 4 (kept 1 of 5)"]


def test_multikrum_averages_the_m_best_scores_by_samples():
    w, notes = combine(KRUM, aggregator="multikrum", byzantine=1, multikrum_m=3)  # clients 1 (2), 0 and 3 (3)
    assert w.tolist() == pytest.approx([(0 * 1 + 1 * 2 + 1 * 1) / 4, (0 + 0 + 1 * 1) / 4])
    assert notes == ["round 1: multikrum left out clients 2, 4 (kept 0, 1, 3 of 5)"]
    w, notes = combine(KRUM, aggregator="multikrum", byzantine=1)  # m = n - f = 4: only the outlier goes
    assert w.tolist() == pytest.approx([(0 + 2 + 0 + 1) / 5, (0 + 0 + 2 + 1) / 5])
    assert notes == ["round 1: multikrum left out client 4 (kept 0, 1, 2, 3 of 5)"]


def test_cosine_keeps_the_changes_that_point_with_the_median_change_and_weights_them_by_samples():
    sent = {"w": torch.tensor([1.0, 1.0])}
    # changes from `sent`: (1, 0), (2, 1), (0, 1), (-3, -1); their coordinate median is (0.5, 0.5):
    # cosines > 0, > 0, > 0, < 0
    updates = [(0, [2.0, 1.0], 1), (1, [3.0, 2.0], 3), (2, [1.0, 2.0], 1), (3, [-2.0, 0.0], 5)]
    w, notes = combine(updates, sent=sent, aggregator="cosine")
    assert w.tolist() == pytest.approx([(2 * 1 + 3 * 3 + 1 * 1) / 5, (1 * 1 + 2 * 3 + 2 * 1) / 5])
    assert notes == ["round 1: cosine left out client 3 (change against the median change; kept 3 of 4)"]
    w, notes = combine(updates[:2], sent=sent, aggregator="cosine")  # two updates: no majority, their mean
    assert w.tolist() == pytest.approx([(2 + 9) / 4, (1 + 6) / 4]) and notes == []


def bucketed(updates, order, **options):
    """`combine` through a Combiner with `defence.bucket`, the updates added in `order`; (w, notes)."""
    notes: list[str] = []
    combiner = Combiner(DefenceOptions(**options), notes, "round 1", lambda cid: {"w": torch.zeros(2)}, seed=3)
    for i in order:
        cid, values, weight = updates[i]
        combiner.add(cid, {"w": torch.tensor(values)}, weight)
    return combiner.result({"w": torch.zeros(2)})["w"], notes


def test_bucketing_aggregates_the_weighted_means_of_seeded_buckets_named_in_the_notes():
    six = [(0, [0.0, 1.0], 1), (1, [2.0, 3.0], 1), (2, [4.0, 0.0], 3), (3, [10.0, 10.0], 1), (4, [1.0, 1.0], 1),
           (5, [3.0, 2.0], 1)]
    w, notes = bucketed(six, range(6), aggregator="median", bucket=2)
    assert len(notes) == 1 and notes[0].startswith("round 1: buckets of 2: ")
    buckets = [[int(c) for c in name.split("+")] for name in notes[0].split(": ")[-1].split(", ")]
    assert sorted(c for b in buckets for c in b) == list(range(6)) and all(len(b) == 2 for b in buckets)
    weighted = torch.tensor([[weight * v for v in values] for _, values, weight in six])  # (6, 2)
    means = torch.stack([sum(weighted[c] for c in b) / sum(six[c][2] for c in b) for b in buckets])  # (3, 2)
    assert w.tolist() == pytest.approx(means.median(dim=0).values.tolist())  # the median of 3 bucket means
    again, again_notes = bucketed(six, reversed(range(6)), aggregator="median", bucket=2)  # any arrival order
    assert again.tolist() == w.tolist() and again_notes == notes
    # one bucket of everyone: the sample-weighted mean, whatever the aggregator
    w, notes = bucketed(six, range(6), aggregator="multikrum", bucket=6)
    assert w.tolist() == pytest.approx([(0 + 2 + 12 + 10 + 1 + 3) / 8, (1 + 3 + 0 + 10 + 1 + 2) / 8])
    assert notes == ["round 1: buckets of 6: 0+1+2+3+4+5", "round 1: multikrum needs 3 updates, got 1: their mean"]


def test_reputation_leaves_out_a_client_whose_mean_cosine_is_negative_and_lets_it_earn_its_way_back():
    """Changes from `sent` = 0: (1, 0), (1, 1), (0, 1) and client 3's; with client 3 at (-1, -1) the
    coordinate medians are (0.5, 0.5), the cosines 1/sqrt(2), 1, 1/sqrt(2), -1. reputation_rounds = 2:
    nobody is left out in round 1 (one score each), client 3 in round 2 (mean -1); it then sends (1, 1)
    (median (1, 1), cosine 1): mean -1/3 in round 3, still out, 0 in round 4, back in."""
    sent = {"w": torch.zeros(2)}
    honest = [(0, [1.0, 0.0]), (1, [1.0, 1.0]), (2, [0.0, 1.0])]
    judge = Reputation(DefenceOptions(reputation=True, reputation_rounds=2))
    notes: list[str] = []

    def round_with(t, three):
        ups = [(cid, ClientUpdate(tensors={"w": torch.tensor(v)})) for cid, v in [*honest, (3, three)]]
        return judge.judge(t, ups, lambda cid: sent, notes)

    assert round_with(1, [-1.0, -1.0]) == frozenset() and notes == []
    assert judge.mean(0) == pytest.approx(math.sqrt(0.5)) and judge.mean(1) == pytest.approx(1.0)
    assert round_with(2, [-1.0, -1.0]) == {3}
    assert notes == ["round 2: reputation left out client 3 (mean cosine with the median change -1.000; kept 3 of 4)"]
    assert round_with(3, [1.0, 1.0]) == {3} and judge.mean(3) == pytest.approx(-1 / 3)
    assert round_with(4, [1.0, 1.0]) == frozenset() and judge.mean(3) == pytest.approx(0.0)
    assert judge.report()["3"] == [0.0, 4]
    # two reporters: no majority, nobody scored
    before = judge.snapshot()
    assert judge.judge(5, [(0, ClientUpdate(tensors={"w": torch.tensor([9.0, 9.0])})),
                           (3, ClientUpdate(tensors={"w": torch.tensor([-9.0, -9.0])}))], lambda cid: sent, notes) == frozenset()
    assert judge.snapshot() == before
    with pytest.raises(GeneflError, match="^resume: the checkpoint is damaged: its 'reputation' is not a table"):
        Reputation(DefenceOptions(reputation=True)).restore({"3": "x"})
    # the Combiner then ignores the clients left out
    combiner = Combiner(DefenceOptions(), [], "round 2", lambda cid: sent, frozenset({3}))
    for cid, values in [*honest, (3, [-100.0, -100.0])]:
        combiner.add(cid, {"w": torch.tensor(values)}, 1.0)
    assert combiner.result({"w": torch.zeros(2)})["w"].tolist() == pytest.approx([2 / 3, 2 / 3])


def test_reputation_reference_trusted_scores_against_the_median_of_the_clients_not_left_out():
    """Honest changes (1, 0), (0, 1), (1, 1), attacker 3 at (-5, -5), accomplice 4 at (-1, 0.3), every
    round; reputation_rounds = 1. The median of all five is (0, 0.3): client 3 scores negative and is left
    out from round 1, client 4 scores +0.09 / (|(-1, 0.3)| * 0.3) > 0 and, against that reference, never
    is. With reference "trusted" round 2's median is that of clients 0, 1, 2, 4: (0.5, 0.65); client 4
    scores (-0.5 + 0.195) / (|(-1, 0.3)| * |(0.5, 0.65)|) < 0, its mean falls below 0 and it is left out too."""
    sent = {"w": torch.zeros(2)}
    changes = [(0, [1.0, 0.0]), (1, [0.0, 1.0]), (2, [1.0, 1.0]), (3, [-5.0, -5.0]), (4, [-1.0, 0.3])]
    ups = [(cid, ClientUpdate(tensors={"w": torch.tensor(v, dtype=torch.float64)})) for cid, v in changes]
    norm4 = math.hypot(1.0, 0.3)
    first = 0.3 * 0.3 / (norm4 * 0.3)
    for reference, second, left_in_round_2 in [("all", first, {3}),
                                               ("trusted", (-0.5 + 0.3 * 0.65) / (norm4 * math.hypot(0.5, 0.65)), {3, 4})]:
        judge = Reputation(DefenceOptions(reputation=True, reputation_rounds=1, reputation_reference=reference))
        notes: list[str] = []
        assert judge.judge(1, ups, lambda cid: sent, notes) == {3}
        assert judge.mean(4) == pytest.approx(first)
        assert judge.judge(2, ups, lambda cid: sent, notes) == left_in_round_2, reference
        assert judge.mean(4) == pytest.approx((first + second) / 2)
        assert judge.mean(0) >= 0 and judge.mean(1) > 0 and judge.mean(2) > 0


def test_krum_distances_from_gram_matrices_keep_small_distances_between_large_models():
    """Models of norm ~300 that differ by ~0.005: the Gram form, centred, matches the exact differences to
    1e-9, block by block as in one piece; uncentred it would lose them (float64 keeps ~16 digits of 1e5)."""
    gen = torch.Generator().manual_seed(0)
    models = torch.randn(1, 1000, generator=gen, dtype=torch.float64) * 10 + torch.randn(6, 1000, generator=gen, dtype=torch.float64) * 1e-4
    exact = torch.stack([((models - m) ** 2).sum(dim=1) for m in models])  # (6, 6)
    assert torch.allclose(pairwise_distances([models]), exact, rtol=1e-9, atol=0)
    assert torch.allclose(pairwise_distances([models[:, :300], models[:, 300:]]), exact, rtol=1e-9, atol=0)
    gram = models @ models.T
    uncentred = gram.diagonal()[:, None] + gram.diagonal()[None, :] - 2 * gram
    assert not torch.allclose(uncentred, exact, rtol=1e-9, atol=0)


def test_krum_with_too_few_updates_for_f_uses_the_largest_f_they_allow_and_says_so():
    w, notes = combine(KRUM[:3], aggregator="krum", byzantine=1)  # 3 updates: f = 0, 1 neighbour each
    assert w.tolist() == [0.0, 0.0]  # scores 1, 1, 4: the tie goes to the lower id
    assert notes[0] == "round 1: 3 updates tolerate at most f = 0 for krum (defence.byzantine = 1); used f = 0"
    w, notes = combine(KRUM[:2], aggregator="krum", byzantine=1)
    assert w.tolist() == pytest.approx([2 / 3, 0.0]) and notes == ["round 1: krum needs 3 updates, got 2: their mean"]


def test_norm_bound_scales_each_change_from_what_was_sent():
    sent = {"w": torch.tensor([1.0, 1.0, 1.0])}
    w, notes = combine([(0, [4.0, 5.0, 1.0], 1), (1, [1.3, 1.4, 1.0], 1)], sent, norm_bound=1.0)
    # client 0's change (3, 4, 0) has norm 5 -> (0.6, 0.8, 0); client 1's (0.3, 0.4, 0) stays
    assert w.tolist() == pytest.approx([1 + (0.6 + 0.3) / 2, 1 + (0.8 + 0.4) / 2, 1.0])
    assert notes == ["round 1: client 0: change clipped from L2 norm 5 to 1"]
    w, _ = combine([(0, [4.0, 5.0, 1.0], 1), (1, [1.3, 1.4, 1.0], 1), (2, [1.0, 1.0, 1.0], 1)], sent,
                   norm_bound=1.0, aggregator="median")
    assert w.tolist() == pytest.approx([1.3, 1.4, 1.0])


def test_each_tensor_is_aggregated_over_the_clients_that_sent_it():
    notes: list[str] = []
    combiner = Combiner(DefenceOptions(aggregator="median"), notes, "round 1", lambda cid: {})
    combiner.add(0, {"a": torch.tensor([1.0]), "b": torch.tensor([7.0])}, 1)
    combiner.add(1, {"a": torch.tensor([2.0])}, 1)
    combiner.add(2, {"a": torch.tensor([9.0]), "b": torch.tensor([1.0])}, 1)
    out = combiner.result({"a": torch.zeros(1), "b": torch.zeros(1), "c": torch.full((1,), 5.0)})
    assert out["a"].item() == 2.0 and out["b"].item() == 4.0 and out["c"].item() == 5.0  # c: nobody sent it
    krum = Combiner(DefenceOptions(aggregator="krum", byzantine=0), notes, "round 1", lambda cid: {})
    for cid, (a, b) in enumerate([(0.0, 5.0), (0.5, None), (9.0, 6.0), (1.0, 5.5)]):
        krum.add(cid, {"a": torch.tensor([a])} | ({"b": torch.tensor([b])} if b is not None else {}), 1)
    out = krum.result({"a": torch.zeros(1), "b": torch.zeros(1)})
    # "a" (all four, 2 neighbours): scores 1.25, 0.5, 136.25, 1.25 -> client 1;
    # "b" (clients 0, 2, 3; 1 neighbour): 0.25 each -> the lowest id, client 0
    assert out["a"].item() == 0.5 and out["b"].item() == 5.0
    assert notes[-2:] == ["round 1 (a): krum left out clients 0, 2, 3 (kept 1 of 4)",
                          "round 1 (b): krum left out clients 2, 3 (kept 0 of 3)"]


@pytest.mark.parametrize("defence, note", [
    (["defence.aggregator=\"krum\""], "round 1: krum left out clients 1, 2, 3, 4 (kept 0 of 5)"),
    (["defence.aggregator=\"multikrum\""], "round 1: multikrum left out client 3 (kept 0, 1, 2, 4 of 5)"),
    (["defence.norm_bound=0.5"], "round 1: client 0: change clipped from L2 norm 0.7074 to 0.5"),
    (["defence.aggregator=\"trimmed_mean\""], "round 1: trimmed_mean of 5 updates with trim 0.1 trims nothing"),
    (["method=\"pacfl\"", "partition=\"pathological\"", "defence.aggregator=\"median\""],
     "round 1, cluster 1: median of 1 update is their plain mean"),
])
def test_what_each_defence_leaves_out_scales_down_or_cannot_protect_is_noted_in_results_json(defence, note):
    """Krum and Multi-Krum name the clients they leave out, norm_bound the ones it scales down; the median and
    the trimmed mean act per coordinate and leave no update out, so they say when they protect nothing."""
    config = load_config(None, ["method=\"fedavg\"", "num_clients=5", "num_newcomers=0", "rounds=1"] + defence)
    doc = build_results(Simulator(config, build_scenario(config)).run())
    assert any(n.startswith(note) for n in doc["method_info"]["notes"]), doc["method_info"]["notes"]
    assert doc["rounds"][0]["notes"] == doc["method_info"]["notes"]


def test_fedavg_with_a_median_measures_norm_bound_from_its_broadcast():
    from genefl.algorithms.fedavg import FedAvg

    initial = {"w": torch.tensor([1.0, 1.0]), "n": torch.tensor(3)}
    config = small_config("method=\"fedavg\"", "defence.aggregator=\"median\"", "defence.norm_bound=2.0")
    strategy = FedAvg(config, [], initial)
    ups = [(0, ClientUpdate(tensors={"w": torch.tensor([7.0, 9.0]), "n": torch.tensor(4)}, meta={"num_samples": 1})),
           (1, ClientUpdate(tensors={"w": torch.tensor([2.0, 1.0]), "n": torch.tensor(6)}, meta={"num_samples": 1})),
           (2, ClientUpdate(tensors={"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(9)}, meta={"num_samples": 1}))]
    state = strategy.aggregate(strategy.init(), 2, iter(ups))
    # client 0's change (6, 8) -> (1.2, 1.6): w values 2.2 / 2 / 0 and 2.6 / 1 / 2; integers take the rounded median
    assert state.weights["w"].tolist() == pytest.approx([2.0, 2.0]) and state.weights["n"].item() == 6
    assert strategy.take_notes() == ["round 2: client 0: change clipped from L2 norm 10 to 2"] and not strategy.notes


# ---- attacks, against the honest update --------------------------------------------------------------
ATTACKED = ["method=\"fedavg\"", "num_clients=5", "num_newcomers=0", "rounds=1"]


@pytest.fixture(scope="module")
def digits():
    config = load_config(None, ATTACKED)
    scenario = build_scenario(config)
    parts = assemble(config, scenario.input_shape, scenario.num_classes)
    return scenario, parts, parts.initial_weights()  # taken before training overwrites the shared model


def sent_update(digits, *overrides, cid=None):
    """(cid, the update client `cid` (default: the first attacker) sends for the initial model, that model)."""
    scenario, parts, initial = digits
    config = load_config(None, ATTACKED + list(overrides))
    cid = min(adversary.run_attackers(config) or {0}) if cid is None else cid
    env = ClientEnv(cid, 1, parts.model, scenario.clients[cid], {}, config, parts.spec, parts.layers)
    return cid, train_and_send(parts.client(), env, Broadcast(tensors=initial)), initial


def changes(update, initial):
    return {k: update.tensors[k] - initial[k] for k in initial if initial[k].is_floating_point()}


@pytest.mark.parametrize("kind, factor", [("signflip", -1.0), ("scale", 10.0), ("backdoor", 10.0)])
def test_update_attacks_multiply_the_change(digits, kind, factor):
    cid, attacked, initial = sent_update(digits, f"adversary.kind=\"{kind}\"", "adversary.fraction=0.4")
    if kind == "backdoor":  # the honest reference is its training on the same poisoned data, unboosted
        _, honest, _ = sent_update(digits, "adversary.kind=\"backdoor\"", "adversary.fraction=0.4", "adversary.boost=1")
    else:
        _, honest, _ = sent_update(digits, cid=cid)
    got, want = changes(attacked, initial), changes(honest, initial)
    assert any(v.abs().sum() > 0 for v in want.values())
    assert all(torch.allclose(got[k], factor * want[k], atol=1e-6) for k in want)
    assert attacked.meta == honest.meta


def test_gaussian_sends_noise_of_std_sigma_whatever_it_learnt(digits):
    _, attacked, initial = sent_update(digits, "adversary.kind=\"gaussian\"", "adversary.fraction=0.4", "adversary.sigma=0.5")
    noise = torch.cat([v.reshape(-1) for v in changes(attacked, initial).values()])
    assert len(noise) > 1000 and abs(noise.mean().item()) < 0.05 and noise.std().item() == pytest.approx(0.5, rel=0.05)


def test_a_client_that_does_not_attack_sends_its_honest_update(digits):
    config = load_config(None, ATTACKED + ["adversary.kind=\"signflip\"", "adversary.fraction=0.4"])
    honest = min(set(range(5)) - adversary.run_attackers(config))
    _, sent, _ = sent_update(digits, "adversary.kind=\"signflip\"", "adversary.fraction=0.4", cid=honest)
    _, plain, _ = sent_update(digits, cid=honest)
    assert all(torch.equal(sent.tensors[k], plain.tensors[k]) for k in plain.tensors)


def my_attack(update, received, env):
    """An own attack for the hook test: send back exactly what was received, plus 1 on every bias."""
    return ClientUpdate(tensors={k: received.tensors[k] + (1.0 if k.endswith("bias") else 0.0) for k in update.tensors},
                        meta=update.meta)


def test_an_own_attack_by_hook(digits):
    _, sent, initial = sent_update(digits, "adversary.kind=\"test_security:my_attack\"", "adversary.fraction=0.4")
    assert all(torch.equal(sent.tensors[k], initial[k] + (1.0 if k.endswith("bias") else 0.0)) for k in initial)
    with pytest.raises(ConfigError, match="adversary.kind: cannot import 'test_security:nothing'"):
        assemble(load_config(None, ["adversary.kind=\"test_security:nothing\"", "adversary.fraction=0.3"]), (1, 8, 8), 10)


def test_alie_by_hand_and_z_max():
    crafted = alie([{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}, {"w": torch.tensor([5.0, 10.0])}], 1.0)
    assert crafted["w"].tolist() == [1.0, 2.0]  # mean (3, 6) - 1 x std (2, 4), Bessel-corrected
    assert alie_z(10, 3) == pytest.approx(0.5244, abs=1e-4)  # s = 6 - 3 = 3: Φ⁻¹(7/10)
    assert alie_z(10, 6) == pytest.approx(1.2816, abs=1e-4)  # s clipped to 1: Φ⁻¹(9/10)


def test_alie_replaces_every_attackers_update_by_the_same_crafted_change():
    config = load_config(None, ["num_clients=5", "adversary.kind=\"alie\"", "adversary.fraction=0.4", "adversary.alie_z=2"])
    bad = sorted(adversary.run_attackers(config))
    sent = {cid: {"w": torch.full((2,), float(cid))} for cid in range(5)}  # what each was sent
    honest_change = {bad[0]: torch.tensor([1.0, 4.0]), bad[1]: torch.tensor([3.0, 0.0])}
    updates = [(cid, ClientUpdate(tensors={"w": sent[cid]["w"] + honest_change.get(cid, torch.tensor([9.0, 9.0]))},
                                  meta={"num_samples": 1})) for cid in range(5)]
    out = list(collude(iter(updates), config, lambda cid: sent[cid]))
    assert [cid for cid, _ in out] == [c for c in range(5) if c not in bad] + bad  # the colluders come last
    # mean (2, 2), std (1.414, 2.828): 2 - 2 x 1.414, 2 - 2 x 2.828
    for cid, update in out:
        want = torch.tensor([2 - 2 * math.sqrt(2), 2 - 4 * math.sqrt(2)]) if cid in bad else torch.tensor([9.0, 9.0])
        assert torch.allclose(update.tensors["w"] - sent[cid]["w"], want)


def test_labelflip_trains_on_flipped_labels(digits):
    scenario, parts, _ = digits
    config = load_config(None, ATTACKED + ["adversary.kind=\"labelflip\"", "adversary.fraction=0.4"])
    env = ClientEnv(1, 1, parts.model, scenario.clients[1], {"kept": 1}, config, parts.spec, parts.layers)
    flipped = poisoned(env)
    assert torch.equal(flipped.data.y_train, 9 - env.data.y_train) and torch.equal(flipped.data.x_train, env.data.x_train)
    assert flipped.store is env.store and torch.equal(env.data.y_train, scenario.clients[1].y_train)


def test_backdoor_stamps_the_trigger_on_a_share_and_relabels_it(digits):
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)  # image 0: values 0..15, image 1: 16..31
    stamped = stamp(x, 3)
    assert stamped[0, 0].tolist() == [[0, 1, 2, 3], [4, 15, 0, 15], [8, 0, 15, 0], [12, 15, 0, 15]]
    assert stamped[1, 0, 1:, 1:].tolist() == [[31, 16, 31], [16, 31, 16], [31, 16, 31]]
    scenario, parts, _ = digits
    config = load_config(None, ATTACKED + ["adversary.kind=\"backdoor\"", "adversary.fraction=0.4",
                                           "adversary.target_label=7", "adversary.poison_fraction=0.25"])
    data = scenario.clients[2]
    env = ClientEnv(2, 1, parts.model, data, {}, config, parts.spec, parts.layers)
    got = poisoned(env).data
    changed = (got.x_train != data.x_train).flatten(1).any(1) | (got.y_train != data.y_train)
    relabelled = (got.x_train == stamp(data.x_train, 3)).flatten(1).all(1) & (got.y_train == 7)
    assert int(relabelled.sum()) == math.ceil(0.25 * data.num_train)  # the poisoned share, stamped and relabelled
    assert not (changed & ~relabelled).any()  # nothing else touched


class _Scripted(torch.nn.Module):
    """A stand-in model for 4x4 images whose pixel [0, 0] holds the label and pixel [0, 1] a flag: it
    mistakes every class-1 image for class 0 (an ordinary confusion, trigger or not) and, once the
    trigger's high corner value 99 is stamped, labels the flagged class-2 images 0 (a backdoor)."""

    def forward(self, x):
        label, flag, stamped = x[:, 0, 0, 0].long(), x[:, 0, 0, 1] > 0, x[:, 0, -1, -1] == 99
        label = torch.where((label == 1) | ((label == 2) & flag & stamped), 0, label)
        return torch.nn.functional.one_hot(label, 3).float()


def test_backdoor_success_counts_only_images_the_model_gets_right_without_the_trigger():
    y = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    x = torch.zeros(10, 1, 4, 4)
    x[:, 0, 0, 0] = y.float()
    x[[6, 7], 0, 0, 1] = 1.0  # two of the four class-2 images carry the flag
    x[:, 0, 1, 1] = 99.0  # every image's maximum: the value the trigger's corner pixel gets
    data = type("Data", (), {"x_test": x, "y_test": y})()
    opts = type("Opts", (), {"target_label": 0, "trigger_size": 1})()
    # the four class-1 images are wrong without the trigger: left out; 2 of the 4 class-2 images flip
    assert adversary.backdoor_success(_Scripted(), data, opts) == 0.5  # over every non-target image: 6 / 8
    assert math.isnan(adversary.backdoor_success(_Scripted(), type("Data", (), {"x_test": x[:2], "y_test": y[:2]})(), opts))


# ---- who attacks: one pure function, in every process ----------------------------------------------------
def test_attackers_are_a_pure_function_of_seed_clients_and_fraction():
    assert attackers(0, 10, 0.3) == frozenset({4, 6, 9})
    assert len(attackers(5, 20, 0.25)) == 5 and attackers(5, 20, 0.25) != attackers(6, 20, 0.25)
    assert len(attackers(0, 3, 0.9)) == 2  # at least one client stays honest
    code = "from genefl.protocol.adversary import attackers; print(sorted(attackers(0, 10, 0.3)), sorted(attackers(5, 20, 0.25)))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONPATH": str(REPO / "src"), "PYTHONHASHSEED": "123", "OMP_NUM_THREADS": "1"})
    assert other.stdout.split("] [")[0] + "]" == "[4, 6, 9]"
    assert other.stdout.strip().endswith(str(sorted(attackers(5, 20, 0.25))))


def test_the_flower_run_config_names_the_same_attackers():
    pytest.importorskip("flwr")
    from genefl.flower.runconfig import config_from_run_config, flat_defaults

    flat = {**flat_defaults(), "seed": 3, "num_clients": 12, "adversary.kind": "scale", "adversary.fraction": 0.25}
    simulated = load_config(None, ["seed=3", "num_clients=12", "adversary.kind=\"scale\"", "adversary.fraction=0.25"])
    assert config_from_run_config(flat) == simulated
    assert adversary.run_attackers(config_from_run_config(flat)) == adversary.run_attackers(simulated)


# ---- configuration errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    (["adversary.kind=\"signflip\"", "adversary.fraction=1.0"], "adversary.fraction: must be in [0, 1), got 1.0"),
    (["adversary.kind=\"signflip\""], "adversary.fraction: 0 of num_clients = 10 makes no attacker"),
    (["adversary.fraction=0.3"], "adversary.fraction: no attack chosen (set adversary.kind or adversary.signature_classes)"),
    (["adversary.signature_classes=[3, 3]", "adversary.fraction=0.3"], "adversary.signature_classes: must be distinct class ids >= 0"),
    (["adversary.signature_classes=[10]", "adversary.fraction=0.3"], "adversary.signature_classes: digits has classes 0..9, got [10]"),
    (["method=\"fedavg\"", "adversary.signature_classes=[1]", "adversary.fraction=0.3"],
     "adversary.signature_classes: method fedavg sends no signature"),
    (["adversary.kind=\"signflip\"", "adversary.fraction=0.3", "adversary.scale=3"], "adversary.scale: not used by attack 'signflip'"),
    (["adversary.kind=\"backdoor\"", "adversary.fraction=0.3", "adversary.target_label=10"], "adversary.target_label: digits has classes 0..9"),
    (["adversary.kind=\"flood\""], "adversary.kind: must be one of none, signflip"),
    (["defence.trim=0.5", "defence.aggregator=\"trimmed_mean\""], "defence.trim: must be in [0, 0.5), got 0.5"),
    (["defence.trim=0.2"], "defence.trim: not used by aggregator 'mean'"),
    (["defence.bucket=2"], "defence.bucket: not used by aggregator 'mean'"),
    (["defence.reputation_rounds=5"], "defence.reputation_rounds: not used while defence.reputation is false"),
    (["defence.reputation_reference=\"trusted\""], "defence.reputation_reference: not used while defence.reputation is false"),
    (["defence.reputation=true", "defence.reputation_reference=\"honest\""], "defence.reputation_reference: must be one of all, trusted"),
    (["defence.reputation=true", "defence.reputation_threshold=1"], "defence.reputation_threshold: must be in [-1, 1)"),
    (["defence.aggregator=\"krum\"", "defence.byzantine=4"], "defence.byzantine: krum with f = 4 needs more than 2f + 2 = 10 clients"),
    (["defence.aggregator=\"multikrum\"", "defence.multikrum_m=11"], "defence.multikrum_m: 11 is more than num_clients = 10"),
    (["method=\"local\"", "defence.aggregator=\"median\""], "defence: method local does not aggregate through genefl.protocol.robust"),
])
def test_bad_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


# ---- an attack hurts, a defence restores -------------------------------------------------------------------
def run(*overrides):
    config = load_config(None, ["method=\"fedavg\"", "num_clients=10", "partition=\"iid\""] + list(overrides))
    return build_results(Simulator(config, build_scenario(config)).run())


def test_scaled_sign_flips_break_fedavg_and_median_trimmed_mean_and_multikrum_restore_it(one_thread):
    common = ["rounds=8", "num_newcomers=0", "eval_every=8"]
    attack = common + ["adversary.kind=\"scale\"", "adversary.fraction=0.3", "adversary.scale=-10"]
    clean = run(*common)["summary"]["acc_clients"]
    assert clean > 0.85
    assert run(*attack)["summary"]["acc_clients"] < 0.2  # ten classes: chance
    for defence in (["defence.aggregator=\"median\""], ["defence.aggregator=\"trimmed_mean\"", "defence.trim=0.3"]):
        assert run(*attack, *defence)["summary"]["acc_clients"] > clean - 0.08, defence  # measured: 5 points below
    doc = run(*attack, "defence.aggregator=\"multikrum\"", "defence.byzantine=3")
    assert doc["summary"]["acc_clients"] > clean - 0.03  # measured: level with the clean run
    bad = doc["method_info"]["adversary"]["attackers"]
    assert bad == [4, 6, 9] and all(
        f"multikrum left out clients {', '.join(map(str, bad))} " in " ".join(r["notes"]) for r in doc["rounds"])
    # a direction test: the flipped changes point against the median change, every round
    doc = run(*attack, "defence.aggregator=\"cosine\"")
    assert doc["summary"]["acc_clients"] > clean - 0.03
    assert all("cosine left out clients 4, 6, 9 (change against the median change; kept 7 of 10)" in " ".join(r["notes"])
               for r in doc["rounds"]), [r["notes"] for r in doc["rounds"]]


def test_bucketing_keeps_the_median_restoring_fedavg_and_costs_krum_its_breakdown_point(one_thread):
    common = ["rounds=8", "num_newcomers=0", "eval_every=8"]
    attack = common + ["adversary.kind=\"scale\"", "adversary.fraction=0.2", "adversary.scale=-10"]
    clean = run(*common)["summary"]["acc_clients"]
    assert run(*attack)["summary"]["acc_clients"] < 0.2
    doc = run(*attack, "defence.aggregator=\"median\"", "defence.bucket=2")  # 5 buckets, at most 2 spoilt
    # measured: 0.83 against 0.92 clean (the plain median 0.88: on iid data buckets only cost)
    assert doc["summary"]["acc_clients"] > clean - 0.12
    notes = [n for r in doc["rounds"] for n in r["notes"] if "buckets of 2: " in n]
    assert len(notes) == 8 and len(set(notes)) == 8  # a new seeded shuffle every round
    assert all(sorted(int(c) for c in n.split(": ")[-1].replace("+", ", ").split(", ")) == list(range(10)) for n in notes)
    # Multi-Krum for f = 2 of 10 updates is f = 2 of 5 buckets, more than 5 tolerate: it runs with f = 1, says so,
    # and a spoilt bucket gets through
    doc = run(*attack, "defence.aggregator=\"multikrum\"", "defence.byzantine=2", "defence.bucket=2")
    assert doc["summary"]["acc_clients"] < 0.2
    assert "round 1: 5 updates tolerate at most f = 1 for multikrum (defence.byzantine = 2)" in " ".join(doc["rounds"][0]["notes"])


def test_reputation_leaves_the_sign_flippers_out_once_it_has_their_scores_and_nobody_in_a_clean_run(one_thread):
    common = ["rounds=8", "num_newcomers=0", "eval_every=8"]
    attack = common + ["adversary.kind=\"signflip\"", "adversary.fraction=0.3"]
    clean = run(*common)
    plain = run(*common, "defence.reputation=true")
    assert plain["summary"]["acc_clients"] == clean["summary"]["acc_clients"]  # nobody left out: the same run
    assert not any(r.get("notes") for r in plain["rounds"])
    assert min(mean for mean, _ in plain["method_info"]["reputation"].values()) > 0.5  # iid: all pull one way
    undefended = run(*attack)["summary"]["acc_clients"]
    doc = run(*attack, "defence.reputation=true", "defence.reputation_rounds=2")
    notes = [" ".join(r.get("notes", [])) for r in doc["rounds"]]
    assert notes[0] == "" and all("reputation left out clients 4, 6, 9 (" in n for n in notes[1:]), notes
    assert doc["summary"]["acc_clients"] > undefended + 0.05  # measured: 0.81 -> 0.92 (clean 0.92)
    assert sorted(c for c, (mean, count) in doc["method_info"]["reputation"].items() if mean < 0) == ["4", "6", "9"]


def test_acc_clients_honest_leaves_the_attackers_out(one_thread):
    """What a defence protects is the clients that do not attack: results.json's summary gives their mean
    beside `acc_clients` (all training clients) in an attacked run, and only there."""
    config = load_config(None, ["method=\"fedavg\"", "num_clients=10", "rounds=2", "num_newcomers=0",
                                "adversary.kind=\"scale\"", "adversary.fraction=0.3", "adversary.scale=-10"])
    result = Simulator(config, build_scenario(config)).run()
    summary = build_results(result)["summary"]
    final = result.rounds[-1].acc_by_client
    honest = [a for c, a in final.items() if c not in (4, 6, 9)]  # the attackers at seed 0 (the test above)
    assert summary["acc_clients_honest"] == pytest.approx(sum(honest) / 7)
    assert summary["acc_clients"] == pytest.approx(sum(final.values()) / 10) != summary["acc_clients_honest"]
    assert "acc_clients_honest" not in run("rounds=1", "num_newcomers=0")["summary"]


def test_acc_by_client_lets_another_runs_honest_clients_be_compared(one_thread):
    """results.json's `acc_by_client`: each training client's accuracy in the last evaluated round (not
    the newcomers'), so that a clean run can be averaged over the clients an attacked run calls honest."""
    common = ["rounds=2", "num_newcomers=1", "newcomer_rounds=[1]", "newcomer_epochs=1"]
    attacked = run(*common, "adversary.kind=\"scale\"", "adversary.fraction=0.3", "adversary.scale=-10")
    clean = run(*common)
    assert sorted(clean["acc_by_client"], key=int) == [str(c) for c in range(10)]  # newcomer 10 joined, not listed
    assert clean["summary"]["acc_clients"] == pytest.approx(sum(clean["acc_by_client"].values()) / 10)
    honest = [c for c in attacked["acc_by_client"] if int(c) not in attacked["method_info"]["adversary"]["attackers"]]
    assert attacked["summary"]["acc_clients_honest"] == pytest.approx(
        sum(attacked["acc_by_client"][c] for c in honest) / 7)
    clean_honest = sum(clean["acc_by_client"][c] for c in honest) / 7
    assert clean_honest - attacked["summary"]["acc_clients_honest"] > 0.05  # the attack hurts the clients it does not own


def test_a_boosted_backdoor_takes_fedavg_and_the_median_stops_it(one_thread):
    common = ["rounds=6", "eval_every=3", "num_newcomers=2", "newcomer_epochs=2", "adversary.kind=\"backdoor\"",
              "adversary.fraction=0.1"]
    attacked = run(*common)
    defended = run(*common, "defence.aggregator=\"median\"")
    assert attacked["summary"]["backdoor_success"] > 0.8 and defended["summary"]["backdoor_success"] < 0.1  # measured: 1.0, 0.0
    assert [r.get("backdoor_success") is not None for r in attacked["rounds"]] == [False, False, True] * 2
    assert attacked["summary"]["backdoor_success_newcomers"] > 0.8 and defended["summary"]["backdoor_success_newcomers"] < 0.2
    assert all("backdoor_success" in n for n in attacked["newcomers"])
    assert abs(attacked["summary"]["acc_clients"] - defended["summary"]["acc_clients"]) < 0.05  # the main task is unharmed



# ---- signature manipulation: an attacker joins a chosen victim's cluster ------------------------------------
def test_a_signature_from_public_images_of_the_victims_classes_joins_its_cluster_and_poisons_it(one_thread):
    """PACFL, digits (mlp), 6 clients of 2 classes each: each client is its own cluster. The attacker (client 4)
    sends -10 its change; alone in its cluster it hurts only itself. Told client 0's label set, it signs with
    public images of those classes, lands in client 0's cluster and takes that cluster's model to chance."""
    common = ["method=\"pacfl\"", "partition=\"pathological\"", "num_clients=6", "num_newcomers=0", "rounds=3",
              "eval_every=3", "adversary.kind=\"scale\"", "adversary.scale=-10", "adversary.fraction=0.17"]
    config = load_config(None, common)
    scenario = build_scenario(config)
    (attacker,), victim = adversary.run_attackers(config), 0
    classes = sorted(set(scenario.clients[victim].y_train.tolist()))
    assert attacker == 4 and len(classes) == 2
    plain = Simulator(config, scenario).run()
    crafted = Simulator(load_config(None, common + [f"adversary.signature_classes={classes}"]), scenario).run()
    plain_of, crafted_of = plain.method_info["cluster_of"], crafted.method_info["cluster_of"]
    assert plain_of[str(attacker)] != plain_of[str(victim)] and crafted_of[str(attacker)] == crafted_of[str(victim)]
    assert plain.rounds[-1].acc_by_client[victim] > 0.9 and crafted.rounds[-1].acc_by_client[victim] < 0.2  # measured: 0.96, 0.0
    assert build_results(crafted)["method_info"]["adversary"] == {"kind": "scale", "attackers": [4], "signature_classes": classes}


def test_only_the_attackers_signature_is_crafted_and_kind_none_leaves_its_training_honest(digits):
    from genefl.runtime.client_side import send_signature

    scenario, parts, initial = digits
    overrides = ["method=\"genefl\"", "adversary.signature_classes=[2, 5]", "adversary.fraction=0.2"]
    config = load_config(None, ATTACKED + overrides)
    (bad,) = adversary.run_attackers(config)
    client = assemble(config, scenario.input_shape, scenario.num_classes).client()

    def signature(cid, cfg):
        env = ClientEnv(cid, 0, parts.model, scenario.clients[cid], {}, cfg, parts.spec, parts.layers)
        return send_signature(client, env).extras["signature"]

    public = load_for(config)
    chosen = (public.y_test == 2) | (public.y_test == 5)
    want = clustering.signature(public.x_test[chosen], config.clustering.p, rng.generator(0, "client", bad, 0, "signature"))
    assert torch.equal(signature(bad, config), want.float())
    honest = load_config(None, ATTACKED + ["method=\"genefl\""])
    assert not torch.equal(signature(bad, honest), want.float())
    other = min(set(range(5)) - {bad})
    assert torch.equal(signature(other, config), signature(other, honest))
    _, trained, _ = sent_update(digits, *overrides)  # kind "none": it trains and sends as an honest client would
    _, plain, _ = sent_update(digits, "method=\"genefl\"", cid=bad)
    assert all(torch.equal(trained.tensors[k], plain.tensors[k]) for k in plain.tensors)
