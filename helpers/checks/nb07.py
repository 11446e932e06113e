"""Checkers of notebook 07 (implicit rewards)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from helpers.checks._core import Verdict, _checker, _compare, _fail, _lm_case, _pass, _run, _Stop, _t


@_checker
def check_implicit_reward(fn) -> Verdict:
    """Exercise (07): ``implicit_reward(policy_logps, ref_logps, beta)`` -> (B,) beta * (log pi_theta(y|x) -
    log pi_ref(y|x))."""
    name = "implicit_reward"
    cases = [(_t([-12.0, -30.5, -8.25]), _t([-14.0, -28.0, -8.0]), 0.1, "three responses, beta = 0.1"),
             (_t([-5.0, -40.0]), _t([-9.0, -41.5]), 2.0, "two responses, beta = 2")]
    for pol, ref, beta, context in cases:
        got = _run(name, fn, pol.clone(), ref.clone(), beta)
        expected = beta * (pol - ref)
        wrongs = [
            (beta * (ref - pol), "wrong sign: r_hat = beta * (log pi_theta - log pi_ref); a response the policy "
                                 "made more likely gets a positive reward."),
            (pol - ref, "beta is missing: r_hat = beta * log(pi_theta / pi_ref)."),
            ((pol - ref) / beta, "the log-ratio is divided by beta; multiply it."),
            (beta * (pol.exp() / ref.exp()), "use the log of the ratio (a difference of log-probs), not the ratio."),
            (beta * pol, "the reference is missing: r_hat = beta * (log pi_theta - log pi_ref)."),
            ((beta * (pol - ref)).mean(), "return one reward per response, shape (B,)."),
        ]
        _compare(name, got, expected, wrongs, context)
    return _pass(name, "beta * (log pi_theta - log pi_ref), one per response.")


@_checker
def check_token_implicit_rewards(fn) -> Verdict:
    """Exercise (07): ``token_implicit_rewards(policy_logits, ref_logits, labels, beta)`` -> (B, T-1)
    beta * (log pi_theta(y_t|.) - log pi_ref(y_t|.)) per scored token, 0 where the label is -100."""
    name = "token_implicit_rewards"
    pol, labels = _lm_case(7, 2, 7, 11)
    ref, _ = _lm_case(8, 2, 7, 11)
    beta = 0.5

    def per_token(logits, shift=True, mask=True):
        lg, lb = (logits[:, :-1], labels[:, 1:]) if shift else (logits, labels)
        lp = torch.gather(F.log_softmax(lg.double(), -1), 2, lb.clamp(min=0).unsqueeze(2)).squeeze(2)
        return lp * (lb != -100) if mask else lp

    got = _run(name, fn, pol.clone(), ref.clone(), labels.clone(), beta)
    expected = beta * (per_token(pol) - per_token(ref))
    wrongs = [
        (beta * (per_token(pol, mask=False) - per_token(ref, mask=False)),
         "masked positions are not zero: multiply by the mask labels[:, 1:] != -100."),
        (beta * (per_token(ref) - per_token(pol)), "wrong sign: policy minus reference."),
        (per_token(pol) - per_token(ref), "beta is missing."),
        (beta * (per_token(pol) - per_token(ref)).sum(-1),
         "you summed over tokens: that is the sequence reward; return one value per token, shape (B, T-1)."),
    ]
    if got.shape == labels.shape:
        raise _Stop(_fail(name, "returned (B, T): no shift. The logits at t predict token t+1: use logits[:, :-1] "
                                "and labels[:, 1:], giving (B, T-1)."))
    _compare(name, got, expected, wrongs, "2 rows, 7 tokens, vocabulary 11, beta = 0.5", tol=1e-4)
    return _pass(name, "per-token beta * log-ratio, shifted and masked; each row sums to r_hat(x, y).")


@_checker
def check_bon_kl_bound(fn) -> Verdict:
    """Exercise (07): ``bon_kl_bound(n)`` -> log n - (n - 1) / n, the KL of best-of-n sampling from pi_ref."""
    name = "bon_kl_bound"
    for n in (1, 2, 4, 16):
        got = _run(name, fn, n)
        expected = _t(math.log(n) - (n - 1) / n)
        wrongs = [(_t(math.log(n)), "log n alone is an upper bound that ignores the -(n-1)/n correction."),
                  (_t(math.log(n) - (n - 1)), "the correction is (n - 1) / n, not n - 1."),
                  (_t(math.log2(n) - (n - 1) / n), "natural log, not log2: KL is measured in nats.")]
        _compare(name, got.reshape(()), expected, wrongs, f"n = {n}")
    return _pass(name, "log n - (n-1)/n: 0 for n = 1, about 0.19 nats for n = 2, 0.64 for n = 4.")
