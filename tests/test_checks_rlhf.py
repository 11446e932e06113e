"""The notebook-08 checkers accept right answers and reject the typical wrong ones with the right diagnosis."""

from __future__ import annotations

import pytest
import torch

from helpers import checks
from helpers.rlhf import compute_gae, rloo_advantages


def gae_right(rewards, values, gamma, lam):
    adv, _ = compute_gae(rewards[None], values[None], torch.ones(1, len(rewards), dtype=torch.bool), gamma, lam)
    return adv[0]


def _deltas(rewards, values, gamma, v_end=None):
    nxt = torch.roll(values, -1) if v_end == "roll" else torch.cat([values[1:], values.new_zeros(1)])
    return rewards + gamma * nxt - values


def _backward(deltas, gl):
    out, acc = torch.zeros_like(deltas), 0.0
    for t in reversed(range(len(deltas))):
        acc = deltas[t] + gl * acc
        out[t] = acc
    return out


def gae_forward(rewards, values, gamma, lam):
    d = _deltas(rewards, values, gamma)
    out, acc = torch.zeros_like(d), 0.0
    for t in range(len(d)):
        acc = d[t] + gamma * lam * acc
        out[t] = acc
    return out


def gae_stub(rewards, values, gamma, lam):
    raise NotImplementedError


GAE_WRONG = {
    "returns": (lambda r, v, g, l: gae_right(r, v, g, l) + v, "returns"),
    "lam ignored": (lambda r, v, g, l: _backward(_deltas(r, v, g), g), "lambda is ignored"),
    "td errors": (lambda r, v, g, l: _deltas(r, v, g), "TD errors"),
    "forward": (gae_forward, "runs forwards"),
    "roll": (lambda r, v, g, l: _backward(_deltas(r, v, g, "roll"), g * l), "torch.roll"),
    "no bootstrap": (lambda r, v, g, l: _backward(r - v, g * l), "bootstrap"),
    "lam in delta": (lambda r, v, g, l: _backward(_deltas(r, v, l), g * l), "uses gamma, not lam"),
    "stub": (gae_stub, "not implemented"),
    "crash": (lambda r, v, g, l: r[10], "raised IndexError"),
    "list": (lambda r, v, g, l: "advantages", "expected a tensor"),
}


def test_check_gae_accepts_right_answer():
    verdict = checks.check_gae(gae_right)
    assert verdict.ok and verdict.message.startswith("✓")


@pytest.mark.parametrize("wrong", sorted(GAE_WRONG))
def test_check_gae_rejects_typical_wrong_answers(wrong):
    fn, keyword = GAE_WRONG[wrong]
    verdict = checks.check_gae(fn)
    assert not verdict.ok
    assert keyword in verdict.message, verdict.message


RLOO_WRONG = {
    "group mean": (lambda R: R - R.mean(1, keepdim=True), "including the sample itself"),
    "divide by k": (lambda R: R - (R.sum(1, keepdim=True) - R) / R.shape[1], "divided by k"),
    "global mean": (lambda R: R - R.mean(), "mixes prompts"),
    "dim 0": (lambda R: R - (R.sum(0, keepdim=True) - R) / (R.shape[0] - 1), "over prompts"),
    "sign": (lambda R: -rloo_advantages(R), "wrong sign"),
    "no baseline": (lambda R: R.clone(), "no baseline"),
    "shape": (lambda R: rloo_advantages(R).flatten(), "shape"),
    "off by a bit": (lambda R: rloo_advantages(R) + 0.01, "wrong value"),
}


def test_check_rloo_accepts_right_answer():
    assert checks.check_rloo_advantages(rloo_advantages).ok


@pytest.mark.parametrize("wrong", sorted(RLOO_WRONG))
def test_check_rloo_rejects_typical_wrong_answers(wrong):
    fn, keyword = RLOO_WRONG[wrong]
    verdict = checks.check_rloo_advantages(fn)
    assert not verdict.ok
    assert keyword in verdict.message, verdict.message
