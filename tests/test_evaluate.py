"""Sampling and the reward / KL(pi || pi_ref) evaluation."""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import pytest
import torch

from helpers import world as W
from helpers.data import pad_rows
from helpers.evaluate import _mean_se, evaluate_policy, generate_responses, sample_policy, score_responses, word_rate
from helpers.rewards import vader_reward


@pytest.fixture(scope="module")
def setup(small_world):
    tok = W.load_tokenizer(small_world)
    model = W.load_sft_model(small_world)
    prompts = W.get_prompts(small_world, n=12, tokenizer=tok)
    return tok, model, prompts, small_world


def test_mean_se_by_hand():
    values = np.array([1.0, 3.0, 2.0, 6.0])
    groups = np.array([0, 0, 1, 1])
    mean, se = _mean_se(values, groups)
    assert mean == 3.0
    assert se == pytest.approx(np.std([2.0, 4.0], ddof=1) / np.sqrt(2))  # from per-prompt means 2 and 4
    mean, se = _mean_se(np.array([1.0, 2.0, 3.0]), np.zeros(3))
    assert se == pytest.approx(1.0 / np.sqrt(3))


def test_sampling_is_seeded_and_leaves_global_rng_alone(setup):
    tok, model, prompts, world = setup
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = sample_policy(model, tok, prompts[:4], 2, max_new_tokens=20, seed=7, progress=False)
    assert torch.equal(torch.rand(3), expected_next)
    b = sample_policy(model, tok, prompts[:4], 2, max_new_tokens=20, seed=7, progress=False)
    assert a["response"] == b["response"]
    assert a["prompt_index"] == [0, 0, 1, 1, 2, 2, 3, 3]
    for ids, ended, length in zip(a["response_ids"], a["ended"], a["length"]):
        assert (ids[-1] == tok.eos_token_id) == ended
        assert tok.eos_token_id not in ids[:-1]
        assert length == len(ids) - int(ended) <= 20


def test_one_sampler_keeps_truncated_responses_as_generated_and_restores_mode(setup):
    """generate_responses: EOS kept when generated, never added to a cut response; train/eval
    mode put back; sample_policy and rlhf draw through it (same seed -> same ids)."""
    tok, model, prompts, world = setup
    from helpers import rlhf

    assert rlhf.generate_responses is generate_responses  # PPO/RLOO rollouts use the same sampler
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts[:6]]
    model.train()
    torch.manual_seed(3)
    responses, ended = generate_responses(model, ids, 3, 1.0, tok.eos_token_id, tok.pad_token_id)
    assert model.training  # put back as it was
    model.eval()
    assert not all(ended), "3 new tokens should cut at least one response"
    for r, done in zip(responses, ended):
        assert len(r) <= 3 and (r[-1] == tok.eos_token_id) == done and tok.eos_token_id not in r[:-1]
    samples = sample_policy(model, tok, prompts[:6], 1, max_new_tokens=3, seed=3, progress=False)
    assert samples["response_ids"] == responses and samples["ended"] == ended
    with pytest.raises(ValueError, match="temperature"):
        generate_responses(model, ids, 3, 0.0, tok.eos_token_id, tok.pad_token_id)


def test_false_mask_alarm_is_hidden_only_during_the_call():
    from helpers.evaluate import _no_false_mask_alarm

    logger = logging.getLogger("transformers.modeling_utils")
    seen = []

    class Catch(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Catch()
    logger.addHandler(handler)
    try:
        with _no_false_mask_alarm():
            logger.warning("We strongly recommend passing in an `attention_mask` since ...")
            logger.warning("another warning")
        logger.warning("We strongly recommend passing in an `attention_mask` outside")
    finally:
        logger.removeHandler(handler)
    assert seen == ["another warning", "We strongly recommend passing in an `attention_mask` outside"]
    assert not logger.filters


def test_generation_and_scoring_see_the_same_distribution(setup):
    """Left-padded sampling and right-padded scoring must give identical per-token log-probs
    (positions follow the attention mask), else the KL estimate is biased."""
    tok, model, prompts, world = setup
    batch_prompts = [p for p in prompts if len(tok(p)["input_ids"]) > 1][:6]
    rows = [tok(p)["input_ids"] for p in batch_prompts]
    assert len({len(r) for r in rows}) > 1, "need prompts of different lengths to exercise padding"
    temperature = 0.7
    input_ids, attention_mask = pad_rows(rows, tok.pad_token_id, side="left")  # as generate_responses does
    torch.manual_seed(0)
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True, top_k=0, top_p=1.0,
                         temperature=temperature, max_new_tokens=12, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, output_scores=True, return_dict_in_generate=True)
    new = out.sequences[:, input_ids.shape[1]:]
    step_logps = torch.stack([torch.log_softmax(s.float(), -1) for s in out.scores], 1)  # (B, steps, V)
    for i in range(len(rows)):
        ids = new[i].tolist()
        ids = ids[: ids.index(tok.eos_token_id) + 1] if tok.eos_token_id in ids else ids
        gen_logps = step_logps[i, torch.arange(len(ids)), torch.tensor(ids)]
        total, per_token = score_responses(model, [rows[i]], [ids], tok.pad_token_id, temperature, per_token=True)
        assert np.allclose(per_token[0], gen_logps.numpy(), atol=1e-4)
        assert total[0] == pytest.approx(gen_logps.sum().item(), abs=1e-3)


def test_kl_of_model_against_itself_is_zero(setup):
    tok, model, prompts, world = setup
    copy_model = W.load_sft_model(world)  # a second, separately loaded copy
    for ref in (model, copy_model):
        result = evaluate_policy(model, ref, tok, prompts, vader_reward, n_samples_per_prompt=3,
                                 max_new_tokens=30, seed=1, progress=False)
        assert np.all(result["kls"] == 0.0) and result["kl_mean"] == 0.0
        assert result["n_samples"] == 36 and len(result["rewards"]) == 36
        for key in ("reward_mean", "reward_se", "kl_se", "length_mean", "eos_rate", "exclaim_rate"):
            assert math.isfinite(result[key]), key
        assert -1 <= result["reward_mean"] <= 1
        # the stored rewards are the reward of prompt + response
        texts = [p + r for p, r in zip(result["prompts"], result["responses"])]
        assert np.allclose(result["rewards"], vader_reward(texts))
        assert np.all(np.isfinite(result["policy_logps"])) and np.all(result["policy_logps"] < 0)


def test_kl_between_different_models_is_positive(setup):
    tok, model, prompts, world = setup
    other = copy.deepcopy(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    result = evaluate_policy(other, model, tok, prompts, vader_reward, n_samples_per_prompt=4,
                             max_new_tokens=30, seed=2, progress=False)
    assert result["kl_mean"] > 0 and result["kl_mean"] > 3 * result["kl_se"]
    # each KL term is log pi - log pi_ref of the same sample
    assert np.allclose(result["kls"], result["policy_logps"] - result["ref_logps"])


def test_word_rate():
    assert word_rate([" a comedy.", " comedy!", " comedyish", " the plot"], "comedy") == 0.5


def test_length_controlled_reward_removes_what_length_explains():
    from helpers.evaluate import length_controlled_reward, length_slope

    lengths = np.array([5.0, 10.0, 15.0, 20.0])
    rewards = 0.02 * lengths + np.array([0.1, -0.1, 0.1, -0.1])
    slope = length_slope(rewards, lengths)
    assert slope == pytest.approx(np.polyfit(lengths, rewards, 1)[0])
    longer = lengths + 10  # a policy that only writes 10 more tokens
    assert length_controlled_reward(0.02 * longer, longer, 0.02, lengths.mean()) == pytest.approx((0.02 * lengths).mean())
    with pytest.raises(ValueError, match="slope is undefined"):
        length_slope([1.0, 2.0], [3, 3])


def test_scoring_caps_its_logits_and_scores_the_same(setup, monkeypatch):
    """A logits budget that allows 3 rows per pass scores exactly as one pass of all rows."""
    import helpers.evaluate as E

    tok, model, prompts, world = setup
    prompt_ids = [tok(p)["input_ids"] for p in prompts[:10]]
    response_ids = [tok(" a fine film, great acting")["input_ids"][: 2 + i % 5] for i in range(10)]
    whole = score_responses(model, prompt_ids, response_ids, tok.pad_token_id)
    longest = max(len(p) + len(r) for p, r in zip(prompt_ids, response_ids))
    seen = []
    original = model.forward

    def spy(*args, **kwargs):
        seen.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(E, "LOGITS_BUDGET_BYTES", 3 * 4 * longest * len(tok))
    monkeypatch.setattr(model, "forward", spy)
    chunked = score_responses(model, prompt_ids, response_ids, tok.pad_token_id)
    assert seen == [3, 3, 3, 1]
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
