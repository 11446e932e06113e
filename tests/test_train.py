"""The DPO loop (helpers/train.py) on tiny real GPT-2 models: determinism, resume, reference
precomputation, accumulation, the metrics against a naive recomputation, and the gpt2 path."""

from __future__ import annotations

import copy
import gc
import math
import weakref

import numpy as np
import pytest
import torch
from conftest import build_tiny_gpt2, build_tiny_pairs
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from helpers.data import tokenize_preferences
from helpers.train import (
    PAIR_METRICS,
    DPOConfig,
    compute_ref_logps,
    epoch_order,
    read_metrics_csv,
    steps_per_epoch,
    train_dpo,
    warmup_lambda,
)

LN2 = math.log(2.0)


def run(tokenizer, pairs, config, policy_seed=0, ref_seed=0, **kwargs):
    """Fresh policy and reference from fixed seeds, then train; returns (metrics, policy, ref)."""
    policy = build_tiny_gpt2(tokenizer, seed=policy_seed)
    ref = build_tiny_gpt2(tokenizer, seed=ref_seed)
    metrics = train_dpo(policy, ref, tokenizer, pairs, config, progress=False, **kwargs)
    return metrics, policy, ref


def assert_same_weights(a, b):
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch():
    order = epoch_order(16, seed=3, epoch=1)
    assert sorted(order.tolist()) == list(range(16))
    assert torch.equal(order, epoch_order(16, seed=3, epoch=1))
    assert not torch.equal(order, epoch_order(16, seed=3, epoch=2))
    assert not torch.equal(order, epoch_order(16, seed=4, epoch=1))
    assert steps_per_epoch(17, batch_size=4, gradient_accumulation_steps=2) == 2
    with pytest.raises(ValueError):
        steps_per_epoch(7, batch_size=4, gradient_accumulation_steps=2)


def test_same_seed_same_metrics_and_another_seed_differs(tiny_tokenizer, tiny_pairs):
    # Dropout left on so the global RNG matters too, not only the data order.
    config = DPOConfig(batch_size=4, max_steps=4, lr=1e-3, seed=1, disable_dropout=False)
    m1, p1, _ = run(tiny_tokenizer, tiny_pairs, config)
    m2, p2, _ = run(tiny_tokenizer, tiny_pairs, config)
    assert m1 == m2
    assert_same_weights(p1, p2)
    m3, _, _ = run(tiny_tokenizer, tiny_pairs, DPOConfig(**{**config.__dict__, "seed": 2}))
    assert [r["loss"] for r in m3] != [r["loss"] for r in m1]


def test_step0_loss_is_ln2_when_policy_is_reference(tiny_tokenizer, tiny_pairs):
    for loss_type, smoothing, expected in [("sigmoid", 0.0, LN2), ("sigmoid", 0.2, LN2),
                                           ("ipo", 0.0, (1 / (2 * 0.5)) ** 2)]:
        config = DPOConfig(batch_size=4, max_steps=1, beta=0.5, loss_type=loss_type, label_smoothing=smoothing)
        metrics, _, _ = run(tiny_tokenizer, tiny_pairs, config)
        assert metrics[0]["loss"] == pytest.approx(expected, abs=1e-6), loss_type
        assert metrics[0]["rewards/chosen"] == 0.0 and metrics[0]["rewards/margins"] == 0.0


def test_first_step_metrics_match_a_naive_computation(tiny_tokenizer, tiny_pairs, naive_logprob):
    beta = 0.7
    config = DPOConfig(batch_size=2, gradient_accumulation_steps=2, max_steps=1, beta=beta,
                       max_length=32, max_prompt_length=8, seed=5)
    policy = build_tiny_gpt2(tiny_tokenizer, seed=1)
    ref = build_tiny_gpt2(tiny_tokenizer, seed=2)
    policy0 = copy.deepcopy(policy)
    metrics = train_dpo(policy, ref, tiny_tokenizer, tiny_pairs, config, progress=False)[0]

    examples = tokenize_preferences(tiny_pairs, tiny_tokenizer, 32, 8)
    used = epoch_order(len(examples), seed=5, epoch=0)[:4].tolist()  # the step's 2 x 2 pairs
    rows = []
    for i in used:
        ex = examples[i]
        p = len(ex["prompt_input_ids"])
        logps = {}
        for name, model in [("pi", policy0), ("ref", ref)]:
            for side in ("chosen", "rejected"):
                ids = ex[f"{side}_input_ids"]
                logps[name, side] = naive_logprob(model, ids[:p], ids[p:])
        r_c = beta * (logps["pi", "chosen"] - logps["ref", "chosen"])
        r_r = beta * (logps["pi", "rejected"] - logps["ref", "rejected"])
        loss = -math.log(1 / (1 + math.exp(-(r_c - r_r))))
        rows.append((loss, r_c, r_r, float(r_c > r_r), logps["pi", "chosen"], logps["pi", "rejected"]))
    means = [sum(col) / len(rows) for col in zip(*rows)]
    names = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "logps/chosen", "logps/rejected"]
    for name, expected in zip(names, means):
        assert metrics[name] == pytest.approx(expected, rel=1e-5, abs=1e-5), name
    assert metrics["rewards/margins"] == pytest.approx(means[1] - means[2], abs=1e-5)
    assert metrics["lr"] == config.lr and metrics["grad_norm"] > 0


def test_interrupted_and_resumed_run_ends_where_an_uninterrupted_one_does(tiny_tokenizer, tiny_pairs, tmp_path):
    # 16 pairs, 2 steps per epoch: 6 steps cross two epoch boundaries; dropout on, so the RNG
    # state must be restored too; warm-up, so the scheduler must be.
    base = dict(batch_size=4, gradient_accumulation_steps=2, max_steps=6, lr=1e-3, warmup_steps=3,
                disable_dropout=False, seed=3, checkpoint_every=3)
    full, full_policy, _ = run(tiny_tokenizer, tiny_pairs, DPOConfig(**base, checkpoint_dir=str(tmp_path / "a")))

    class Disconnect(Exception):
        pass

    def disconnect_at_5(record):
        if record["step"] == 5:  # after the checkpoint at step 3: step 4 and 5's work is lost
            raise Disconnect

    config = DPOConfig(**base, checkpoint_dir=str(tmp_path / "b"), metrics_csv=str(tmp_path / "b" / "m.csv"))
    with pytest.raises(Disconnect):
        run(tiny_tokenizer, tiny_pairs, config, callback=disconnect_at_5)
    # A new session: new objects, even differently initialised ones; the checkpoint decides.
    resumed, resumed_policy, _ = run(tiny_tokenizer, tiny_pairs, config, policy_seed=9)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    assert resumed == full
    assert_same_weights(resumed_policy, full_policy)
    assert read_metrics_csv(config.metrics_csv) == full  # floats survive the CSV exactly
    # A finished run resumed again does nothing more.
    again, _, _ = run(tiny_tokenizer, tiny_pairs, config)
    assert again == full
    # Another run's checkpoint is refused rather than silently mixed in.
    with pytest.raises(ValueError, match="another run"):
        run(tiny_tokenizer, tiny_pairs, DPOConfig(**{**base, "seed": 4}, checkpoint_dir=config.checkpoint_dir))


def test_precomputed_reference_matches_held_reference(tiny_tokenizer, tiny_pairs):
    config = DPOConfig(batch_size=4, max_steps=4, lr=1e-3, beta=0.5, seed=2)
    held, _, ref = run(tiny_tokenizer, tiny_pairs, config, policy_seed=0, ref_seed=1)
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    assert_same_weights(ref, build_tiny_gpt2(tiny_tokenizer, seed=1))  # the reference never moved
    pre_config = DPOConfig(**{**config.__dict__, "precompute_ref_logps": True, "ref_batch_size": 5})
    pre, _, _ = run(tiny_tokenizer, tiny_pairs, pre_config, policy_seed=0, ref_seed=1)
    for a, b in zip(held, pre):
        for name in PAIR_METRICS:
            # Different batches pad differently: summed log-probs near -50 agree to a float32 ulp
            # (4e-6), hence a relative tolerance for them; the losses agree within 1e-6.
            tolerance = dict(rel=2e-7) if name.startswith("logps/") else dict(abs=1e-6)
            assert a[name] == pytest.approx(b[name], **tolerance), (a["step"], name)


def test_precompute_with_a_loader_frees_the_reference(tiny_tokenizer, tiny_pairs):
    refs = []

    def load_reference():
        model = build_tiny_gpt2(tiny_tokenizer, seed=1)
        refs.append(weakref.ref(model))
        return model

    config = DPOConfig(batch_size=4, max_steps=2, precompute_ref_logps=True)
    policy = build_tiny_gpt2(tiny_tokenizer, seed=0)
    metrics = train_dpo(policy, load_reference, tiny_tokenizer, tiny_pairs, config, progress=False)
    gc.collect()
    assert len(refs) == 1 and refs[0]() is None  # loaded once, and gone
    # Same numbers as handing over log-probs computed beforehand.
    examples = tokenize_preferences(tiny_pairs, tiny_tokenizer, config.max_length, config.max_prompt_length)
    ref_logps = compute_ref_logps(build_tiny_gpt2(tiny_tokenizer, seed=1), examples, tiny_tokenizer.pad_token_id)
    assert ref_logps[0].shape == (len(tiny_pairs),) and ref_logps[0].dtype == torch.float32
    again = train_dpo(build_tiny_gpt2(tiny_tokenizer, seed=0), None, tiny_tokenizer, tiny_pairs, config,
                      ref_logps=ref_logps, progress=False)
    assert again == metrics


def test_gradient_accumulation_equals_the_large_batch(tiny_tokenizer, tiny_pairs):
    accumulated, p1, _ = run(tiny_tokenizer, tiny_pairs, DPOConfig(batch_size=2, gradient_accumulation_steps=4,
                                                                   max_steps=3, lr=1e-3, ref_batch_size=8),
                             ref_seed=1)
    large, p2, _ = run(tiny_tokenizer, tiny_pairs, DPOConfig(batch_size=8, max_steps=3, lr=1e-3), ref_seed=1)
    for a, b in zip(accumulated, large):
        for name in (*PAIR_METRICS, "grad_norm"):
            assert a[name] == pytest.approx(b[name], rel=1e-4, abs=1e-5), name
    for (name, a), (_, b) in zip(p1.state_dict().items(), p2.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_loss_goes_down_on_a_tiny_overfit_set_with_warmup(tiny_tokenizer):
    pairs = build_tiny_pairs(n_per_prompt=2)
    config = DPOConfig(batch_size=8, max_steps=12, lr=2e-3, beta=0.5, warmup_steps=2)
    metrics, _, _ = run(tiny_tokenizer, pairs, config)
    assert metrics[0]["loss"] == pytest.approx(LN2, abs=1e-6)
    assert metrics[-1]["loss"] < 0.3
    assert metrics[-1]["rewards/accuracies"] == 1.0 and metrics[-1]["rewards/margins"] > 1.0
    assert [r["lr"] for r in metrics[:4]] == pytest.approx([2e-3 * warmup_lambda(s, 2) for s in range(4)])
    assert [r["lr"] for r in metrics[:3]] == pytest.approx([2e-3 / 3, 4e-3 / 3, 2e-3])


def test_evaluation_is_logged_and_does_not_change_training(tiny_tokenizer, tiny_pairs):
    calls = []

    def eval_fn(policy):
        calls.append(policy.training)
        # draws from the global RNG; per-sample arrays are not logged, scalars are
        return {"reward": torch.rand(()).item(), "kl": torch.tensor(0.5), "rewards": np.zeros(3),
                "responses": ["a", "b"], "n_samples": 3}

    config = DPOConfig(batch_size=4, max_steps=5, eval_every=2, lr=1e-3, disable_dropout=False)
    plain, _, _ = run(tiny_tokenizer, tiny_pairs, config)
    evaluated, _, _ = run(tiny_tokenizer, tiny_pairs, config, eval_fn=eval_fn)
    assert calls == [False, False, False]  # steps 2, 4 and the last, in eval mode
    assert [r["step"] for r in evaluated if "eval/reward" in r] == [2, 4, 5]
    assert evaluated[1]["eval/kl"] == 0.5 and evaluated[1]["eval/n_samples"] == 3.0
    assert not any(k in r for r in evaluated for k in ("eval/rewards", "eval/responses"))
    for a, b in zip(plain, evaluated):
        assert {k: b[k] for k in a} == a


def test_gpt2_profile_path_one_step(tiny_tokenizer, tmp_path):
    """The gpt2 profile's loading path: a GPT2Config() (124M shape) model saved locally stands in
    for the hub checkpoint, loaded by from_pretrained(absolute path), trained for one step."""
    torch.manual_seed(0)
    model_dir, tok_dir = tmp_path / "gpt2", tmp_path / "tokenizer"
    GPT2LMHeadModel(GPT2Config()).save_pretrained(str(model_dir))
    tiny_tokenizer.save_pretrained(str(tok_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir.resolve()))
    policy = AutoModelForCausalLM.from_pretrained(str(model_dir.resolve()))
    ref = AutoModelForCausalLM.from_pretrained(str(model_dir.resolve()))
    assert sum(p.numel() for p in policy.parameters()) == 124_439_808
    before = policy.transformer.h[0].mlp.c_fc.weight.detach().clone()
    config = DPOConfig(batch_size=2, max_steps=1, max_length=32, max_prompt_length=8, lr=1e-4)
    metrics = train_dpo(policy, ref, tokenizer, build_tiny_pairs(1)[:2], config, progress=False)
    assert len(metrics) == 1
    assert metrics[0]["loss"] == pytest.approx(LN2, abs=1e-5)
    assert math.isfinite(metrics[0]["grad_norm"]) and metrics[0]["grad_norm"] > 0
    assert not torch.equal(before, policy.transformer.h[0].mlp.c_fc.weight)


def test_gradient_accumulation_equals_the_bigger_batch(tiny_tokenizer):
    """4 micro-batches of 4 pairs accumulated = one batch of 16: the same pairs, the same update
    (each micro-batch's loss is divided by their number, so the gradients are of the same mean)."""
    pairs = build_tiny_pairs(n_per_prompt=4)  # 32 pairs
    after = {}
    for batch, accum in ((16, 1), (4, 4)):
        config = DPOConfig(batch_size=batch, gradient_accumulation_steps=accum, max_steps=2, beta=0.5, lr=1e-2,
                           warmup_steps=0, max_length=32, max_prompt_length=8, seed=3)
        policy = build_tiny_gpt2(tiny_tokenizer, seed=1)
        ref = build_tiny_gpt2(tiny_tokenizer, seed=2)
        metrics = train_dpo(policy, ref, tiny_tokenizer, pairs, config, progress=False)
        after[accum] = (torch.cat([p.detach().flatten() for p in policy.parameters()]), metrics)
    (w_big, m_big), (w_acc, m_acc) = after[1], after[4]
    # the gradients agree to float32 rounding (the grad norms below); AdamW divides each by its own
    # running scale, which turns rounding in a near-zero gradient into up to ~1e-4 of an lr-1e-2 step
    assert torch.allclose(w_big, w_acc, atol=1e-4), (w_big - w_acc).abs().max()
    assert (w_big - torch.cat([p.flatten() for p in build_tiny_gpt2(tiny_tokenizer, seed=1).parameters()])).abs().max() > 1e-3
    for a, b in zip(m_big, m_acc):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
