"""Implicit rewards against independent computations, on real tiny GPT-2s."""

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers.implicit import (
    bon_kl_bound,
    expected_best_of_n,
    implicit_vs_true,
    pair_implicit_rewards,
    pearson,
    ranking_accuracy,
    response_token_rewards,
    spearman,
    token_implicit_rewards_from_logits,
    token_reward_table,
)
from helpers.pairs import response_ended
from helpers.runs import best_of_n_curve, beta_sweep, dpo_run_dir, load_or_train_dpo, make_dpo_config, split_pairs
from helpers.world import load_sft_model
from tests.conftest import build_tiny_gpt2

PAIRS = [
    {"prompt": "The movie was", "chosen": " great and the acting was superb.", "rejected": " dull."},
    {"prompt": "I did not like", "chosen": " the plot", "rejected": " the ending at all!"},
]


@pytest.fixture()
def two_models(tiny_tokenizer):
    return build_tiny_gpt2(tiny_tokenizer, seed=1), build_tiny_gpt2(tiny_tokenizer, seed=2)


def test_token_rewards_sum_to_beta_times_naive_logratio(tiny_tokenizer, two_models, naive_logprob):
    policy, ref = two_models
    beta = 0.3
    rows = response_token_rewards(policy, ref, tiny_tokenizer, [p["prompt"] for p in PAIRS],
                                  [p["chosen"] for p in PAIRS], beta)
    eos = tiny_tokenizer.eos_token_id
    for pair, row in zip(PAIRS, rows):
        prompt_ids = tiny_tokenizer(pair["prompt"], add_special_tokens=False)["input_ids"]
        response_ids = tiny_tokenizer(pair["chosen"], add_special_tokens=False)["input_ids"] + [eos]
        assert row["ids"] == response_ids  # every response token and the EOS, nothing of the prompt
        assert "".join(row["tokens"][:-1]) == pair["chosen"]
        expected = beta * (naive_logprob(policy, prompt_ids, response_ids) - naive_logprob(ref, prompt_ids, response_ids))
        assert row["total"] == pytest.approx(expected, abs=1e-4)
        assert len(row["rewards"]) == len(response_ids)


def test_token_rewards_are_zero_at_the_reference_and_masked():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, 3, 6]])
    rewards, mask = token_implicit_rewards_from_logits(logits, logits.clone(), labels, beta=0.5)
    assert torch.equal(rewards, torch.zeros(2, 4))
    assert mask.tolist() == [[False, True, True, False], [True, True, True, True]]
    # a policy that adds +1 to the logit of token 3 everywhere: each scored 3 gets a positive reward,
    # every other scored token a negative one; masked positions stay exactly 0
    bumped = logits.clone()
    bumped[..., 3] += 1.0
    rewards, mask = token_implicit_rewards_from_logits(bumped, logits, labels, beta=0.5)
    targets = labels[:, 1:]
    assert (rewards[mask & (targets == 3)] > 0).all()
    assert (rewards[mask & (targets != 3)] < 0).all()
    assert (rewards[~mask] == 0).all()


def test_pair_implicit_rewards_match_token_sums(tiny_tokenizer, two_models):
    policy, ref = two_models
    beta = 0.2
    out = pair_implicit_rewards(policy, ref, tiny_tokenizer, PAIRS, beta)
    rows_c = response_token_rewards(policy, ref, tiny_tokenizer, [p["prompt"] for p in PAIRS],
                                    [p["chosen"] for p in PAIRS], beta)
    rows_r = response_token_rewards(policy, ref, tiny_tokenizer, [p["prompt"] for p in PAIRS],
                                    [p["rejected"] for p in PAIRS], beta)
    np.testing.assert_allclose(out["chosen"], [r["total"] for r in rows_c], atol=1e-5)
    np.testing.assert_allclose(out["rejected"], [r["total"] for r in rows_r], atol=1e-5)
    np.testing.assert_allclose(out["margins"], out["chosen"] - out["rejected"], atol=1e-6)
    np.testing.assert_allclose(out["chosen"], beta * (out["policy_chosen_logps"] - out["ref_chosen_logps"]), atol=1e-5)


def test_correlations_against_numpy_and_hand_values():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ties get their average rank: x ranks (0, 1.5, 1.5, 3)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([0, 1.5, 1.5, 3], [0, 1, 2, 3])[0, 1])


def test_ranking_accuracy_counts_ties_half():
    assert ranking_accuracy([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 4.0, -1.0]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    with pytest.raises(ValueError):
        ranking_accuracy([1.0], [1.0, 2.0])


def test_pairwise_accuracy_equals_brute_force():
    rng = np.random.default_rng(1)
    imp = rng.normal(size=12).round(1)
    tru = (imp + rng.normal(size=12)).round(1)
    agree, total = 0.0, 0
    for i, j in itertools.combinations(range(12), 2):
        if tru[i] == tru[j]:
            continue
        total += 1
        if imp[i] == imp[j]:
            agree += 0.5
        elif (imp[i] > imp[j]) == (tru[i] > tru[j]):
            agree += 1
    assert implicit_vs_true(imp, tru)["pairwise_accuracy"] == pytest.approx(agree / total)


def test_bon_kl_bound_is_the_limit_of_the_exact_kl():
    assert bon_kl_bound(1) == 0.0
    assert bon_kl_bound(2) == pytest.approx(math.log(2) - 0.5)
    # exact KL of best-of-n over K equally likely outcomes with distinct rewards:
    # pi_bon(k) = (k/K)^n - ((k-1)/K)^n; it rises to the bound as K grows
    for n in (2, 4, 16):
        kls = []
        for k_outcomes in (10, 100, 10_000):
            k = np.arange(1, k_outcomes + 1)
            p = (k / k_outcomes) ** n - ((k - 1) / k_outcomes) ** n
            kls.append(float(np.sum(p[p > 0] * np.log(p[p > 0] * k_outcomes))))
        assert kls[0] < kls[1] < kls[2] <= bon_kl_bound(n) + 1e-12
        assert kls[2] == pytest.approx(bon_kl_bound(n), abs=2e-3)
    with pytest.raises(ValueError):
        bon_kl_bound(0)


def test_expected_best_of_n_equals_mean_over_all_subsets():
    rng = np.random.default_rng(2)
    rewards = rng.normal(size=(3, 6))
    for n in (1, 2, 3, 6):
        brute = [np.mean([max(row[list(s)]) for s in itertools.combinations(range(6), n)]) for row in rewards]
        np.testing.assert_allclose(expected_best_of_n(rewards, n), brute, atol=1e-12)
    np.testing.assert_allclose(expected_best_of_n(rewards, 1), rewards.mean(1))
    with pytest.raises(ValueError):
        expected_best_of_n(rewards, 7)


def test_token_reward_table_averages_and_filters():
    rows = [{"tokens": ["a", "b", "a"], "rewards": [1.0, -1.0, 3.0]}, {"tokens": ["b", "c"], "rewards": [0.0, 5.0]}]
    table = token_reward_table(rows, min_count=2)
    assert [(d["token"], d["mean"], d["count"]) for d in table] == [("a", 2.0, 2), ("b", -0.5, 2)]


# ---------------------------------------------------------------- runs of the task world


def test_split_pairs_is_by_prompt_disjoint_and_complete():
    import datasets

    records = [{"prompt": f"p{i % 10}", "chosen": f" a{i}", "rejected": f" b{i}"} for i in range(50)]
    for pairs in (records, datasets.Dataset.from_list(records)):
        train, held = split_pairs(pairs, held_out_fraction=0.2, seed=0)
        train_prompts = {r["prompt"] for r in train}
        held_prompts = {r["prompt"] for r in held}
        assert len(held_prompts) == 2 and not train_prompts & held_prompts
        assert len(train) + len(held) == 50
        assert sorted(r["chosen"] for r in list(train) + list(held)) == sorted(r["chosen"] for r in records)
    assert [r["prompt"] for r in split_pairs(records, 0.2, seed=0)[1]] == [r["prompt"] for r in split_pairs(records, 0.2, seed=0)[1]]


def test_load_or_train_dpo_caches_the_run_and_keys_it(small_world):
    import time

    from tests.conftest import build_tiny_pairs

    pairs = [{k: v.lower() for k, v in r.items()} for r in build_tiny_pairs()]
    config = make_dpo_config(small_world, max_steps=3, batch_size=4, warmup_steps=1, eval_every=0, lr=1e-3)
    policy, metrics = load_or_train_dpo(small_world, config, pairs, device="cpu", progress=False)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert metrics[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    run_dir = dpo_run_dir(small_world, config, pairs)
    # a finished run: safetensors + metrics.csv, no resume pickle, no resume folder left behind
    assert (run_dir / "model.safetensors").exists() and (run_dir / "metrics.csv").exists()
    assert not list(run_dir.glob("*.pt")) and not run_dir.with_name(run_dir.name + ".resume").exists()
    assert type(policy).from_pretrained(run_dir) is not None
    # the second call loads: same metrics, same weights, no training step taken
    start = time.perf_counter()
    again, metrics_again = load_or_train_dpo(small_world, config, pairs, device="cpu", progress=False)
    assert metrics_again == metrics
    assert all(torch.equal(a, b) for a, b in zip(policy.parameters(), again.parameters()))
    sft = load_sft_model(small_world)
    assert not all(torch.equal(a, b) for a, b in zip(policy.parameters(), sft.parameters()))
    # another beta, other pairs or another SFT model -> another run directory
    assert dpo_run_dir(small_world, replace(config, beta=0.5), pairs) != run_dir
    assert dpo_run_dir(small_world, config, pairs[:-1]) != run_dir
    assert dpo_run_dir(small_world, replace(config, eval_every=7), pairs) == run_dir  # bookkeeping only
    assert time.perf_counter() - start < 30
    # a flipped byte in the cached run is found by its digest and the run trained again, the same
    good = {k: v.clone() for k, v in policy.state_dict().items()}
    weights = run_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01
    weights.write_bytes(bytes(data))
    rebuilt, metrics_rebuilt = load_or_train_dpo(small_world, config, pairs, device="cpu", progress=False)
    assert metrics_rebuilt == metrics
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in good.items())


def test_beta_sweep_and_best_of_n_curve(small_world):
    from helpers.world import get_prompts, get_reward_fn, load_tokenizer
    from tests.conftest import build_tiny_pairs

    pairs = [{k: v.lower() for k, v in r.items()} for r in build_tiny_pairs()]
    tok = load_tokenizer(small_world)
    prompts = get_prompts(small_world, n=6, seed=0, tokenizer=tok)
    reward_fn = get_reward_fn(small_world)
    config = make_dpo_config(small_world, max_steps=2, batch_size=4, warmup_steps=0, eval_every=0, lr=1e-3)
    rows = beta_sweep(small_world, (0.1, 1.0), pairs, prompts, reward_fn, base_config=config,
                      n_samples_per_prompt=2, device="cpu", progress=False)
    assert [r["beta"] for r in rows] == [0.1, 1.0]
    for r in rows:
        assert len(r["metrics"]) == 2 and math.isfinite(r["kl_mean"]) and -1 <= r["reward_mean"] <= 1
        assert r["metrics"][0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    sft = load_sft_model(small_world)
    curve = best_of_n_curve(sft, tok, prompts, reward_fn, ns=(1, 2, 4), progress=False)
    means = [c["reward_mean"] for c in curve]
    assert means[0] <= means[1] <= means[2]  # the expected max of more samples is never lower
    assert [c["kl_bound"] for c in curve] == [bon_kl_bound(n) for n in (1, 2, 4)]


def test_an_empty_response_is_scored_on_its_eos(tiny_tokenizer, two_models):
    policy, ref = two_models
    rows = response_token_rewards(policy, ref, tiny_tokenizer, ["The movie was"], [""], beta=1.0)
    assert rows[0]["ids"] == [tiny_tokenizer.eos_token_id] and len(rows[0]["rewards"]) == 1


def test_a_cut_response_is_scored_without_an_eos(tiny_tokenizer, two_models, naive_logprob):
    """A response cut at max_new_tokens (``chosen_ended=False``, every gpt2 sample nearly) is scored as
    generated: no EOS column, and its token sum equals pair_implicit_rewards of the same pair."""
    policy, ref = two_models
    beta = 0.3
    cut = [{**p, "chosen_ended": False, "rejected_ended": True} for p in PAIRS]
    out = pair_implicit_rewards(policy, ref, tiny_tokenizer, cut, beta)
    rows = response_token_rewards(policy, ref, tiny_tokenizer, [p["prompt"] for p in cut], [p["chosen"] for p in cut],
                                  beta, ended=response_ended(cut, "chosen"))
    eos = tiny_tokenizer.eos_token_id
    for pair, row, total in zip(cut, rows, out["chosen"]):
        response_ids = tiny_tokenizer(pair["chosen"], add_special_tokens=False)["input_ids"]
        assert row["ids"] == response_ids and eos not in row["ids"]
        assert row["total"] == pytest.approx(float(total), abs=1e-5)
        prompt_ids = tiny_tokenizer(pair["prompt"], add_special_tokens=False)["input_ids"]
        naive = beta * (naive_logprob(policy, prompt_ids, response_ids) - naive_logprob(ref, prompt_ids, response_ids))
        assert row["total"] == pytest.approx(naive, abs=1e-4)
    # the same responses scored as if they had ended differ: the EOS term is what the flag removes
    ended_rows = response_token_rewards(policy, ref, tiny_tokenizer, [p["prompt"] for p in cut],
                                        [p["chosen"] for p in cut], beta)
    assert all(r["ids"][-1] == eos for r in ended_rows)
    assert all(abs(a["total"] - b["total"]) > 1e-6 for a, b in zip(rows, ended_rows))
    assert response_ended(cut, "rejected") == [True, True] and response_ended(PAIRS, "chosen") == [True, True]
    with pytest.raises(ValueError, match="'ended' flags"):
        response_token_rewards(policy, ref, tiny_tokenizer, ["a"], ["b"], beta, ended=[True, False])
    with pytest.raises(ValueError, match="side must be"):
        response_ended(cut, "winner")
