"""Preference pairs sampled from the SFT model and ranked by the reward."""

from __future__ import annotations

from itertools import combinations

import datasets
import pytest

from helpers import world as W
from helpers.data import tokenize_preferences
from helpers.evaluate import sample_policy
from helpers.pairs import COLUMNS, build_preference_pairs, get_preference_pairs, load_pairs_stats, pairs_from_samples
from helpers.rewards import vader_reward


def test_pairs_from_samples_by_hand():
    records, ties = pairs_from_samples(["p"], [["a", "b", "c", "d"]], [[0.5, 0.1, 0.5, -0.2]])
    got = [(r["chosen"], r["rejected"]) for r in records]
    # (a,b) a; (a,c) tie; (a,d) a; (b,c) c; (b,d) b; (c,d) c
    assert got == [("a", "b"), ("a", "d"), ("c", "b"), ("b", "d"), ("c", "d")]
    assert ties == 1
    assert records[0]["chosen_reward"] == 0.5 and records[0]["rejected_reward"] == 0.1
    records, ties = pairs_from_samples(["p"], [["a", "b"]], [[0.30, 0.32]], tie_tolerance=0.05)
    assert records == [] and ties == 1


@pytest.fixture(scope="module")
def setup(small_world):
    tok = W.load_tokenizer(small_world)
    model = W.load_sft_model(small_world)
    prompts = W.get_prompts(small_world, small_world.pairs_split, n=16, tokenizer=tok)
    return small_world, tok, model, prompts


def test_every_pair_is_ordered_and_ties_are_counted(setup):
    world, tok, model, prompts = setup
    k = 4

    def coarse_reward(texts):  # rounded VADER: many exact ties
        return [round(r * 2) / 2 for r in vader_reward(texts)]

    ds, stats = build_preference_pairs(model, tok, prompts, coarse_reward, k=k, max_new_tokens=40, seed=5,
                                       progress=False)
    assert isinstance(ds, datasets.Dataset) and tuple(ds.column_names) == COLUMNS
    assert len(ds) == stats["n_pairs"] > 0
    assert all(c > r for c, r in zip(ds["chosen_reward"], ds["rejected_reward"]))
    # recompute independently from the same samples (sampling is seeded)
    samples = sample_policy(model, tok, prompts, k, max_new_tokens=40, seed=5, progress=False)
    kept = {}
    for i, text, ended in zip(samples["prompt_index"], samples["response"], samples["ended"]):
        if ended and text.strip():
            kept.setdefault(i, []).append(text)
    n_pairs = n_ties = 0
    for i, texts in kept.items():
        scores = coarse_reward([prompts[i] + t for t in texts])
        for a, b in combinations(range(len(texts)), 2):
            if scores[a] == scores[b]:
                n_ties += 1
            else:
                n_pairs += 1
    assert stats["n_ties"] == n_ties > 0
    assert stats["n_pairs"] == n_pairs
    assert stats["n_truncated"] == sum(not e for e in samples["ended"])
    assert stats["n_empty"] == sum(e and not t.strip() for e, t in zip(samples["ended"], samples["response"]))
    # the stored rewards are the reward of prompt + response
    for row in ds.select(range(min(10, len(ds)))):
        assert coarse_reward([row["prompt"] + row["chosen"]])[0] == row["chosen_reward"]
        assert coarse_reward([row["prompt"] + row["rejected"]])[0] == row["rejected_reward"]


def test_world_pairs_are_saved_reloaded_and_tokenize(setup):
    world, tok, _, _ = setup
    ds = get_preference_pairs(world, n_prompts=20, k=4, progress=False)
    stats = load_pairs_stats(world, n_prompts=20, k=4)
    again = get_preference_pairs(world, n_prompts=20, k=4)  # from disk this time
    assert ds.to_list() == again.to_list()
    assert stats["n_pairs"] == len(ds) and stats["n_pairs"] + stats["n_ties"] <= 20 * 6
    assert all(c > r for c, r in zip(ds["chosen_reward"], ds["rejected_reward"]))
    # prompts come from the pairs split, not from the evaluation prompts
    eval_reviews = set(W.load_reviews(world, world.eval_split))
    assert not any(any(r.startswith(p) for r in eval_reviews) for p in set(ds["prompt"]) if len(p) > 25)
    # the pairs feed helpers.data as they are, and prompt/response re-tokenize consistently
    examples = tokenize_preferences(ds.to_list(), tok, max_length=64, max_prompt_length=16)
    assert len(examples) == len(ds)
    for ex, row in zip(examples[:20], ds.to_list()[:20]):
        assert ex["chosen_input_ids"][: len(ex["prompt_input_ids"])] == tok(row["prompt"])["input_ids"]
        assert ex["chosen_input_ids"][-1] == tok.eos_token_id


def test_best_vs_worst_and_min_gap_by_hand():
    from helpers.pairs import best_vs_worst, pairs_from_samples, with_min_gap

    records, _ = pairs_from_samples(["p", "q"], [["a", "b", "c"], ["x", "y"]], [[0.1, 0.5, -0.2], [0.3, 0.31]])
    assert len(records) == 4
    bw = best_vs_worst(records)
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in bw] == [("p", "b", "c"), ("q", "y", "x")]
    kept = with_min_gap(records, 0.3)
    assert sorted((r["chosen"], r["rejected"]) for r in kept) == [("a", "c"), ("b", "a"), ("b", "c")]
