"""The notebook 04-07 checkers accept the right answers and reject the typical wrong ones, by name."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import checks
from helpers.implicit import bon_kl_bound, token_implicit_rewards_from_logits
from helpers.logprobs import concatenated_forward, sequence_logprobs
from helpers.losses import dpo_loss


def verdict(checker, fn):
    v = checker(fn)
    assert isinstance(v, checks.Verdict)
    return v


def accepts(checker, fn):
    v = verdict(checker, fn)
    assert v.ok and v.message.startswith("✓"), v.message


def rejects(checker, fn, *words):
    v = verdict(checker, fn)
    assert not v.ok and v.message.startswith("✗"), f"accepted a wrong answer: {v.message}"
    for w in words:
        assert w.lower() in v.message.lower(), f"{w!r} not in {v.message!r}"


def stub(*args):
    raise NotImplementedError


MINE = [checks.check_sequence_logprobs, checks.check_response_labels, checks.check_sft_loss,
        checks.check_make_pairs, checks.check_dpo_batch_loss, checks.check_kl_estimate,
        checks.check_implicit_reward, checks.check_token_implicit_rewards, checks.check_bon_kl_bound]


@pytest.mark.parametrize("checker", MINE, ids=lambda c: c.__name__)
def test_stub_and_crash_are_reported(checker):
    rejects(checker, stub, "not implemented")

    def crash(*args):
        return {}["missing"]

    rejects(checker, crash, "KeyError")


# ---------------------------------------------------------------- 04


def seq(logits, labels, shift=True, average=False, normalise=True, mask=True, upcast=True):
    if upcast:
        logits = logits.float()
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    keep = labels != -100
    lp = F.log_softmax(logits, -1) if normalise else logits
    tok = torch.gather(lp, 2, labels.clamp(min=0).unsqueeze(2)).squeeze(2)
    if mask:
        tok = tok * keep
    total = tok.sum(-1).float()
    return total / keep.sum(-1) if average else total


def test_sequence_logprobs_checker():
    accepts(checks.check_sequence_logprobs, sequence_logprobs)
    accepts(checks.check_sequence_logprobs, seq)
    rejects(checks.check_sequence_logprobs, lambda lg, lb: seq(lg, lb, shift=False), "no shift")
    rejects(checks.check_sequence_logprobs, lambda lg, lb: seq(lg, lb, average=True), "averaged")
    rejects(checks.check_sequence_logprobs, lambda lg, lb: seq(lg, lb, normalise=False), "log_softmax")
    rejects(checks.check_sequence_logprobs, lambda lg, lb: seq(lg, lb, mask=False), "-100")
    rejects(checks.check_sequence_logprobs, lambda lg, lb: seq(lg, lb, upcast=False), "bf16")
    rejects(checks.check_sequence_logprobs,
            lambda lg, lb: seq(lg[:, 1:], lb[:, :-1], shift=False), "wrong way")

    def per_token(lg, lb):
        lg, lb = lg[:, :-1].float(), lb[:, 1:]
        return torch.gather(F.log_softmax(lg, -1), 2, lb.clamp(min=0).unsqueeze(2)).squeeze(2) * (lb != -100)

    rejects(checks.check_sequence_logprobs, per_token, "per-token")


def right_labels(ids, prompt_length, length):
    labels = torch.full_like(ids, -100)
    labels[prompt_length:length] = ids[prompt_length:length]
    return labels


def test_response_labels_checker():
    accepts(checks.check_response_labels, right_labels)
    eos = 0

    def by_pad(ids, p, n):
        labels = ids.clone()
        labels[:p] = -100
        labels[ids == eos] = -100
        return labels

    rejects(checks.check_response_labels, by_pad, "EOS is masked", "pad")

    def prompt_scored(ids, p, n):
        labels = ids.clone()
        labels[n:] = -100
        return labels

    rejects(checks.check_response_labels, prompt_scored, "prompt is scored")
    rejects(checks.check_response_labels, lambda ids, p, n: right_labels(ids, p + 1, n), "off by one")
    rejects(checks.check_response_labels, lambda ids, p, n: right_labels(ids, p, n - 1), "EOS is masked")
    rejects(checks.check_response_labels, lambda ids, p, n: right_labels(ids, p, len(ids)), "padding is scored")
    rejects(checks.check_response_labels, lambda ids, p, n: right_labels(ids, p, n)[1:], "shape")


# ---------------------------------------------------------------- 05


def sft_loss(logits, input_ids, attention_mask):
    labels = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def test_sft_loss_checker():
    accepts(checks.check_sft_loss, sft_loss)

    def no_mask(logits, ids, am):
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    def no_shift(logits, ids, am):
        labels = ids.masked_fill(am == 0, -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)

    def summed(logits, ids, am):
        labels = ids[:, 1:].masked_fill(am[:, 1:] == 0, -100)
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                               reduction="sum")

    def row_mean(logits, ids, am):
        return torch.stack([sft_loss(logits[b:b + 1], ids[b:b + 1], am[b:b + 1]) for b in range(len(ids))]).mean()

    rejects(checks.check_sft_loss, no_mask, "padding")
    rejects(checks.check_sft_loss, no_shift, "no shift")
    rejects(checks.check_sft_loss, summed, "summed")
    rejects(checks.check_sft_loss, row_mean, "each row")


def make_pairs(prompt, responses, rewards):
    out = []
    for i, j in itertools.combinations(range(len(responses)), 2):
        if rewards[i] == rewards[j]:
            continue
        hi, lo = (i, j) if rewards[i] > rewards[j] else (j, i)
        out.append({"prompt": prompt, "chosen": responses[hi], "rejected": responses[lo]})
    return out


def test_make_pairs_checker():
    accepts(checks.check_make_pairs, make_pairs)

    def swapped(p, r, s):
        return [{"prompt": d["prompt"], "chosen": d["rejected"], "rejected": d["chosen"]} for d in make_pairs(p, r, s)]

    def with_ties(p, r, s):
        out = []
        for i, j in itertools.combinations(range(len(r)), 2):
            hi, lo = (i, j) if s[i] > s[j] else (j, i)
            out.append({"prompt": p, "chosen": r[hi], "rejected": r[lo]})
        return out

    def best_worst(p, r, s):
        return [{"prompt": p, "chosen": r[int(np.argmax(s))], "rejected": r[int(np.argmin(s))]}]

    rejects(checks.check_make_pairs, swapped, "swapped")
    rejects(checks.check_make_pairs, with_ties, "ties")
    rejects(checks.check_make_pairs, best_worst, "every two")


# ---------------------------------------------------------------- 06


def dpo_batch_loss(policy, ref_model, batch, beta, average=False, use_ref=True, sign=1.0, no_grad_ref=True):
    pc, pr = concatenated_forward(policy, batch, average=average)
    if no_grad_ref:
        with torch.no_grad():
            rc, rr = concatenated_forward(ref_model, batch, average=average)
    else:
        rc, rr = concatenated_forward(ref_model, batch, average=average)
    if not use_ref:
        rc, rr = torch.zeros_like(rc), torch.zeros_like(rr)
    if sign < 0:
        pc, pr, rc, rr = pr, pc, rr, rc
    return dpo_loss(pc, pr, rc, rr, beta)[0].mean()


def test_dpo_batch_loss_checker():
    accepts(checks.check_dpo_batch_loss, dpo_batch_loss)
    rejects(checks.check_dpo_batch_loss, lambda p, r, b, beta: dpo_batch_loss(p, r, b, beta, average=True), "averaged")
    rejects(checks.check_dpo_batch_loss, lambda p, r, b, beta: dpo_batch_loss(p, r, b, beta, use_ref=False),
            "reference is missing")
    rejects(checks.check_dpo_batch_loss, lambda p, r, b, beta: dpo_batch_loss(p, r, b, beta, sign=-1.0), "wrong sign")
    rejects(checks.check_dpo_batch_loss, lambda p, r, b, beta: dpo_batch_loss(p, r, b, 1.0), "beta is missing")
    rejects(checks.check_dpo_batch_loss, lambda p, r, b, beta: dpo_batch_loss(p, r, b, beta, no_grad_ref=False),
            "reference model")

    def per_pair(p, r, b, beta):
        pc, pr = concatenated_forward(p, b)
        with torch.no_grad():
            rc, rr = concatenated_forward(r, b)
        return dpo_loss(pc, pr, rc, rr, beta)[0]

    rejects(checks.check_dpo_batch_loss, per_pair, "mean over pairs")

    def no_grad_policy(p, r, b, beta):
        with torch.no_grad():
            return dpo_batch_loss(p, r, b, beta)

    rejects(checks.check_dpo_batch_loss, no_grad_policy, "no gradient")


def kl_estimate(policy_logps, ref_logps, prompt_index):
    d = (policy_logps - ref_logps).double()
    means = torch.stack([d[prompt_index == i].mean() for i in torch.unique(prompt_index)])
    return d.mean(), means.std() / math.sqrt(len(means))


def test_kl_estimate_checker():
    accepts(checks.check_kl_estimate, kl_estimate)
    rejects(checks.check_kl_estimate, lambda p, r, i: kl_estimate(r, p, i), "wrong sign")
    rejects(checks.check_kl_estimate, lambda p, r, i: ((p - r).mean(), (p - r).std() / math.sqrt(len(p))),
            "independent")

    def std_only(p, r, i):
        mean, se = kl_estimate(p, r, i)
        return mean, se * math.sqrt(len(torch.unique(i)))

    rejects(checks.check_kl_estimate, std_only, "divide by sqrt")


# ---------------------------------------------------------------- 07


def test_implicit_reward_checker():
    accepts(checks.check_implicit_reward, lambda p, r, beta: beta * (p - r))
    rejects(checks.check_implicit_reward, lambda p, r, beta: beta * (r - p), "wrong sign")
    rejects(checks.check_implicit_reward, lambda p, r, beta: p - r, "beta is missing")
    rejects(checks.check_implicit_reward, lambda p, r, beta: (p - r) / beta, "divided by beta")
    rejects(checks.check_implicit_reward, lambda p, r, beta: beta * p, "reference is missing")
    rejects(checks.check_implicit_reward, lambda p, r, beta: (beta * (p - r)).mean(), "one reward per response")


def test_token_implicit_rewards_checker():
    accepts(checks.check_token_implicit_rewards, lambda p, r, lb, beta: token_implicit_rewards_from_logits(p, r, lb, beta)[0])

    def tok(logits, labels, shift=True, mask=True):
        lg, lb = (logits[:, :-1], labels[:, 1:]) if shift else (logits, labels)
        lp = torch.gather(F.log_softmax(lg.float(), -1), 2, lb.clamp(min=0).unsqueeze(2)).squeeze(2)
        return lp * (lb != -100) if mask else lp

    rejects(checks.check_token_implicit_rewards, lambda p, r, lb, beta: beta * (tok(p, lb, False) - tok(r, lb, False)),
            "no shift")
    rejects(checks.check_token_implicit_rewards,
            lambda p, r, lb, beta: beta * (tok(p, lb, mask=False) - tok(r, lb, mask=False)), "mask")
    rejects(checks.check_token_implicit_rewards, lambda p, r, lb, beta: beta * (tok(r, lb) - tok(p, lb)), "wrong sign")
    rejects(checks.check_token_implicit_rewards, lambda p, r, lb, beta: tok(p, lb) - tok(r, lb), "beta is missing")
    rejects(checks.check_token_implicit_rewards, lambda p, r, lb, beta: beta * (tok(p, lb) - tok(r, lb)).sum(-1),
            "summed")


def test_bon_kl_bound_checker():
    accepts(checks.check_bon_kl_bound, bon_kl_bound)
    rejects(checks.check_bon_kl_bound, lambda n: math.log(n), "log n alone")
    rejects(checks.check_bon_kl_bound, lambda n: math.log2(n) - (n - 1) / n, "log2")
