"""Checkers of notebook 08 (RLHF vs DPO)."""

from __future__ import annotations

import torch

from helpers.checks._core import Verdict, _checker, _compare, _pass, _run, _t


def _gae_backward(deltas: torch.Tensor, gamma_lam: float) -> torch.Tensor:
    """A_t = sum_l (gamma lam)^l delta_{t+l}, as a plain double loop."""
    T = deltas.shape[0]
    return _t([sum(gamma_lam ** l * deltas[t + l].item() for l in range(T - t)) for t in range(T)])


def _td_errors(rewards: torch.Tensor, values: torch.Tensor, gamma: float, v_end: float = 0.0) -> torch.Tensor:
    """delta_t = r_t + gamma V_{t+1} - V_t with V_T = v_end."""
    next_values = torch.cat([values[1:], _t([v_end])])
    return rewards + gamma * next_values - values


@_checker
def check_gae(fn) -> Verdict:
    """Exercise: ``gae(rewards, values, gamma, lam)`` -> (T,) advantages of one response (GAE, Schulman et al. 2016)."""
    name = "gae"
    cases = [
        (_t([-0.1, 0.2, -0.05, 1.3]), _t([0.3, 0.5, 0.1, 0.8]), 1.0, 0.95, "4 tokens with KL penalties and values"),
        (_t([0.5, -0.2, 0.1, 0.0, 2.0]), _t([0.2, -0.1, 0.4, 0.3, 1.0]), 0.9, 0.5, "5 tokens, gamma = 0.9, lam = 0.5"),
        (_t([0.0, 0.0, 1.0]), _t([0.0, 0.0, 0.0]), 1.0, 0.95, "a 3-token response, score 1 on the last token, V = 0"),
    ]
    for rewards, values, gamma, lam, context in cases:
        got = _run(name, fn, rewards.clone(), values.clone(), gamma, lam)
        deltas = _td_errors(rewards, values, gamma)
        expected = _gae_backward(deltas, gamma * lam)
        forward = torch.zeros_like(deltas)
        acc = 0.0
        for t in range(deltas.shape[0]):  # accumulated from the first token instead of from the last
            acc = deltas[t].item() + gamma * lam * acc
            forward[t] = acc
        wrongs = [
            (expected + values, "these are the returns (A + V), the value head's target; return the advantages A."),
            (_gae_backward(deltas, gamma), "lambda is ignored (lam = 1): that is the discounted return minus V, "
                                           "high-variance; GAE discounts the TD errors by gamma * lam."),
            (deltas, "these are the one-step TD errors delta_t (lam = 0); GAE sums them: "
                     "A_t = delta_t + gamma * lam * A_{t+1}."),
            (forward, "the recursion runs forwards; it must run backwards from the last token: "
                      "A_t = delta_t + gamma * lam * A_{t+1}."),
            (_gae_backward(_td_errors(rewards, values, gamma, v_end=values[0].item()), gamma * lam),
             "after the last token the episode ends, so V_T = 0 (torch.roll wraps V_0 around to the end)."),
            (_gae_backward(_td_errors(rewards, values, 0.0), gamma * lam),
             "delta_t must bootstrap from the next state's value: delta_t = r_t + gamma * V_{t+1} - V_t."),
            (_gae_backward(_td_errors(rewards, values, lam), gamma * lam), "delta_t uses gamma, not lam, before V_{t+1}."),
        ]
        _compare(name, got, expected, wrongs, context, tol=1e-5)
    return _pass(name, "A_t = delta_t + gamma * lam * A_{t+1}, computed backwards with V = 0 after the last token.")


@_checker
def check_rloo_advantages(fn) -> Verdict:
    """Exercise: ``rloo_advantages(rewards)`` -> (P, k): each sample's reward minus the mean of the *other* k - 1
    samples of the same prompt (Ahmadian et al. 2024)."""
    name = "rloo_advantages"
    cases = [
        (_t([[0.2, 0.9, -0.4], [1.5, 1.0, 2.5], [-1.0, -2.0, 0.0], [0.1, 0.1, 0.4]]), "four prompts, k = 3"),
        (_t([[0.5, -0.5], [2.0, 1.0], [0.0, 0.3]]), "three prompts, k = 2"),
        (_t([[1.0, 2.0, 3.0, 6.0]]), "one prompt, k = 4 samples with rewards [1, 2, 3, 6]"),
    ]
    for rewards, context in cases:
        got = _run(name, fn, rewards.clone())
        k = rewards.shape[1]
        others_mean = (rewards.sum(1, keepdim=True) - rewards) / (k - 1)
        expected = rewards - others_mean
        wrongs = [
            (rewards - rewards.mean(1, keepdim=True),
             "the baseline is the mean of all k samples, including the sample itself; leave it out: "
             "b_i = (sum_j R_j - R_i) / (k - 1). (Your answer is the right one times (k-1)/k.)"),
            (rewards - (rewards.sum(1, keepdim=True) - rewards) / k,
             "the others' sum is divided by k; there are k - 1 others."),
            (rewards - rewards.mean(), "the baseline mixes prompts: average over the k samples of the same prompt (dim=1)."),
            (rewards - (rewards.sum(0, keepdim=True) - rewards) / max(rewards.shape[0] - 1, 1),
             "the leave-one-out mean is taken over prompts (dim=0); take it over the k samples of a prompt (dim=1)."),
            (others_mean - rewards, "wrong sign: the advantage is R_i - b_i (better than the others -> positive)."),
            (rewards, "no baseline: the advantage is R_i - b_i with b_i the mean of the other samples."),
        ]
        _compare(name, got, expected, wrongs, context, tol=1e-6)
    return _pass(name, "A_i = R_i - mean of the other k - 1 rewards of the same prompt; it sums to 0 per prompt.")
