"""Checkers of notebook 06 (the DPO loop)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from helpers.checks._core import (
    Verdict,
    _call,
    _checker,
    _compare,
    _fail,
    _pair_batch,
    _pass,
    _seq_logps_variant,
    _Stop,
    _tiny_lm,
)


def _two_numbers(out) -> tuple[float, float]:
    first, second = (float(v) for v in out)
    return first, second


@_checker
def check_dpo_batch_loss(fn) -> Verdict:
    """Exercise (06): ``dpo_batch_loss(policy, ref_model, batch, beta)`` -> the mean DPO loss of a concatenated
    batch (chosen rows first), with gradients to the policy only."""

    name = "dpo_batch_loss"
    policy, ref = _tiny_lm(1), _tiny_lm(2)
    batch = _pair_batch(3)
    beta = 0.5
    try:
        out = _call(name, fn, policy, ref, {k: v.clone() for k, v in batch.items()}, beta)
    except _Stop as stop:
        return stop.verdict
    loss = out[0] if isinstance(out, tuple) else out
    if not torch.is_tensor(loss):
        return _fail(name, f"returned {type(loss).__name__}; return the loss as a tensor.")
    if loss.numel() != 1:
        return _fail(name, f"returned shape {tuple(loss.shape)}; return the mean over pairs (one number) "
                           "so that loss.backward() works.")
    if not loss.requires_grad:
        return _fail(name, "the loss has no gradient: the policy's forward must not run under torch.no_grad().")
    policy.zero_grad()
    loss.backward()
    if any(p.grad is not None and p.grad.abs().sum() > 0 for p in ref.parameters()):
        return _fail(name, "gradients reached the reference model: run it under torch.no_grad() (pi_ref is frozen).")
    if all(p.grad is None for p in policy.parameters()):
        return _fail(name, "no gradient reached the policy.")
    with torch.no_grad():
        lg_p = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        lg_r = ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    n = batch["input_ids"].shape[0] // 2

    def variant(average=False, shift=True, use_ref=True, sign=1.0, b=beta, swap=False):
        lp = _seq_logps_variant(lg_p, batch["labels"], shift=shift, average=average)
        lr = _seq_logps_variant(lg_r, batch["labels"], shift=shift, average=average)
        pc, pr, rc, rr = lp[:n], lp[n:], lr[:n], lr[n:]
        if swap:
            pc, pr, rc, rr = pr, pc, rr, rc
        h = (pc - pr) - ((rc - rr) if use_ref else 0.0)
        return -F.logsigmoid(sign * b * h).mean()

    expected = variant()
    wrongs = [
        (variant(average=True), "you averaged the log-probs over tokens; DPO sums them (log pi(y|x))."),
        (variant(shift=False), "no shift: logits[:, :-1] predict labels[:, 1:] (use helpers.logprobs.sequence_logprobs)."),
        (variant(use_ref=False), "the reference is missing: h = (log pi_w - log pi_l) - (log ref_w - log ref_l)."),
        (variant(sign=-1.0), "the margin has the wrong sign: rows 0..B-1 are chosen, B..2B-1 rejected."),
        (variant(swap=True), "chosen and rejected are swapped: the first half of the batch holds the chosen rows."),
        (variant(b=1.0), "beta is missing: the loss is -log sigmoid(beta * h)."),
        (variant(b=1 / beta), "h is divided by beta; multiply it."),
    ]
    _compare(name, torch.as_tensor(loss.detach(), dtype=torch.float64).reshape(()), expected,
             [(w, why) for w, why in wrongs], "3 pairs, a random policy and reference, beta = 0.5", tol=1e-4)
    at_ref = fn(policy, policy, {k: v.clone() for k, v in batch.items()}, beta)
    at_ref = float((at_ref[0] if isinstance(at_ref, tuple) else at_ref).detach())
    if abs(at_ref - math.log(2.0)) > 1e-4:
        return _fail(name, f"with the policy as its own reference the loss must be ln 2 = 0.6931, got {at_ref:.4f}.")
    return _pass(name, "summed log-probs from one concatenated forward, frozen reference, -log sigmoid(beta h) "
                       "averaged; ln 2 at pi = pi_ref.")


@_checker
def check_kl_estimate(fn) -> Verdict:
    """Exercise (06): ``kl_estimate(policy_logps, ref_logps, prompt_index)`` -> (mean, standard error) of
    KL(pi || pi_ref) from samples y ~ pi: the mean of log pi(y|x) - log pi_ref(y|x), and its standard error from
    the per-prompt means (samples of one prompt are correlated)."""
    name = "kl_estimate"
    g = torch.Generator().manual_seed(6)
    prompt_index = torch.arange(5).repeat_interleave(4)  # 5 prompts x 4 samples
    offsets = torch.randn(5, generator=g).repeat_interleave(4) * 3
    ref_logps = -20 + torch.randn(20, generator=g)
    policy_logps = ref_logps + 1.5 + offsets + 0.3 * torch.randn(20, generator=g)
    hint = " (return two numbers: mean, standard error)"
    try:
        out = _call(name, fn, policy_logps.clone(), ref_logps.clone(), prompt_index.clone(), hint=hint)
        mean, se = _call(name, lambda: _two_numbers(out), hint=hint)
    except _Stop as stop:
        return stop.verdict
    d = (policy_logps - ref_logps).double()
    per_prompt = d.view(5, 4).mean(1)
    exp_mean, exp_se = d.mean().item(), (per_prompt.std(unbiased=True) / math.sqrt(5)).item()
    if abs(mean - exp_mean) > 1e-4:
        if abs(mean + exp_mean) < 1e-4:
            return _fail(name, "wrong sign: KL(pi || pi_ref) = E_pi[log pi - log pi_ref], samples drawn from pi.")
        if abs(mean - d.abs().mean().item()) < 1e-4 and abs(mean - exp_mean) > 1e-4:
            return _fail(name, "don't take absolute values: single terms can be negative; only the mean is >= 0.")
        return _fail(name, f"mean: got {mean:.4f}, expected {exp_mean:.4f} (the mean of log pi - log pi_ref).")
    naive_se = (d.std(unbiased=True) / math.sqrt(20)).item()
    if abs(se - exp_se) > 1e-4:
        if abs(se - naive_se) < 1e-4:
            return _fail(name, f"standard error {se:.4f} treats the 20 samples as independent; the 4 samples of a "
                               f"prompt share its offset. Use the std of the 5 per-prompt means / sqrt(5) = {exp_se:.4f}.")
        if abs(se - per_prompt.std(unbiased=True).item()) < 1e-4:
            return _fail(name, "you returned the standard deviation of the per-prompt means; divide by sqrt(#prompts).")
        return _fail(name, f"standard error: got {se:.4f}, expected {exp_se:.4f} (std of per-prompt means / sqrt(5)).")
    return _pass(name, "mean of log pi - log pi_ref over samples from pi; SE from per-prompt means.")
