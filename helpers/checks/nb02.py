"""Checkers of notebook 02 (the RLHF objective)."""

from __future__ import annotations

import torch

from helpers import toy
from helpers.checks._core import Verdict, _call, _checker, _compare, _fail, _pass, _run, _Stop, _t


@_checker
def check_optimal_policy(fn) -> Verdict:
    """Exercise: ``optimal_policy(pi_ref, r, beta)`` = pi_ref * exp(r / beta) / Z."""
    name = "optimal_policy"
    world = toy.make_toy()
    cases = [
        (world.pi_ref, world.r, 1.0, "the toy world, beta = 1"),
        (world.pi_ref, world.r, 0.5, "the toy world, beta = 0.5"),
        (_t([0.5, 0.3, 0.2]), _t([0.0, 1.0, 3.0]), 4.0, "pi_ref = [0.5, 0.3, 0.2], r = [0, 1, 3], beta = 4"),
        (world.pi_ref, world.r, 0.001, "the toy world, beta = 0.001 (r / beta = 2000)"),
    ]
    for pi_ref, r, beta, context in cases:
        got = _run(name, fn, pi_ref.clone(), r.clone(), beta)
        expected = toy.optimal_policy(pi_ref, r, beta)
        unnorm = pi_ref * torch.exp(r / beta)
        wrongs = [
            (toy.optimal_policy(pi_ref, -r, beta), "wrong sign: exp(-r / beta) moves mass *away* from high reward; "
                                                  "use exp(+r / beta)."),
            (toy.optimal_policy(pi_ref, r, 1.0) if beta != 1.0 else None,
             "beta is missing: the exponent is r / beta (at beta = 1 you were lucky)."),
            (toy.optimal_policy(pi_ref, r * beta, 1.0), "r * beta should be r / beta: a *larger* beta must keep pi* "
                                                        "*closer* to pi_ref."),
            (unnorm, "not normalised: divide by Z = sum_y pi_ref(y) exp(r(y) / beta) so pi* sums to 1."),
            (torch.softmax(r / beta, -1), "pi_ref is missing: pi* = pi_ref * exp(r / beta) / Z, not softmax(r / beta)."),
            (torch.softmax(pi_ref + r / beta, -1), "you added pi_ref itself inside the softmax; it is its log that "
                                                   "adds: pi_ref * exp(r / beta) = exp(log pi_ref + r / beta)."),
        ]
        if beta < 0.01 and not torch.isfinite(got).all():
            raise _Stop(_fail(name, f"returned nan for {context}: exp(2000) overflows. Compute "
                                    "softmax(log pi_ref + r / beta) -- the same distribution, no overflow."))
        _compare(name, got, expected, [w for w in wrongs if w[0] is not None], context)
    return _pass(name, "pi_ref * exp(r / beta) / Z, normalised, stable at beta = 0.001.")


@_checker
def check_rlhf_objective(fn) -> Verdict:
    """Exercise: ``rlhf_objective(pi, pi_ref, r, beta)`` = E_pi[r] - beta * KL(pi || pi_ref)."""
    name = "rlhf_objective"
    world = toy.make_toy()
    pi_a = toy.optimal_policy(world.pi_ref, world.r, 1.0)
    pi_b = _t([0.4, 0.2, 0.1, 0.1, 0.1, 0.1])
    pi_c = _t([0.5, 0.3, 0.2, 0.0, 0.0, 0.0])
    cases = [(pi_a, 0.5, "pi = pi* at beta 1, evaluated at beta = 0.5"),
             (pi_b, 2.0, "pi = [0.4, 0.2, 0.1, 0.1, 0.1, 0.1], beta = 2"),
             (pi_c, 1.0, "pi = [0.5, 0.3, 0.2, 0, 0, 0] (no mass on three responses), beta = 1")]
    for pi, beta, context in cases[:2]:
        _check_one_objective(name, fn, world, pi, beta, context)
    # the notebook then calls it on a batch of policies, (N, K): one objective per row
    batch = torch.stack([pi_a, pi_b, world.pi_ref])  # (3, K)
    got = _run(name, fn, batch.clone(), world.pi_ref.clone(), world.r.clone(), 1.0)
    expected = torch.stack([toy.expected_reward(p, world.r) - toy.kl_divergence(p, world.pi_ref) for p in batch])
    wrongs = [(expected.sum(), "on a batch of policies (N, K) return one objective per row, shape (N,): sum over "
                               "the last dimension (dim=-1), not over everything.")]
    _compare(name, got, expected, wrongs, "a batch of 3 policies, shape (3, 6), beta = 1")
    _check_one_objective(name, fn, world, *cases[2])  # last: the edge case, once the formula is right
    return _pass(name, "sum_y pi(y) r(y) - beta * sum_y pi(y) log(pi(y) / pi_ref(y)), one per policy, with "
                       "0 log 0 = 0 where the policy has no mass.")


def _check_one_objective(name, fn, world, pi, beta, context):
    """Stop with a diagnosis unless ``fn`` gives E_pi[r] - beta KL(pi || pi_ref) for one policy."""
    got = _run(name, fn, pi.clone(), world.pi_ref.clone(), world.r.clone(), beta)
    reward = toy.expected_reward(pi, world.r)
    kl = toy.kl_divergence(pi, world.pi_ref)
    expected = reward - beta * kl
    wrongs = [
        (reward + beta * kl, "wrong sign of the KL term: it is a *penalty*, E[r] - beta * KL."),
        (reward - kl, "beta is missing in front of the KL term."),
        (reward - kl / beta, "the KL term is multiplied by beta, not divided by it."),
        (reward - beta * toy.kl_divergence(world.pi_ref, pi),
         "the KL is reversed: the objective uses KL(pi || pi_ref), weighted by pi (the policy being sampled)."),
        ((pi * world.r).mean() - beta * kl, "E_pi[r] is a sum over responses weighted by pi, not a mean."),
        (reward - beta * kl / pi.numel(), "the KL is a sum over responses, not a mean."),
        (reward - beta * (torch.log(pi) - torch.log(world.pi_ref)).sum(),
         "the log-ratios are summed unweighted: KL(pi || pi_ref) = sum_y pi(y) log(pi(y)/pi_ref(y)), each "
         "log-ratio weighted by pi(y)."),
        (world.r.mean() - beta * kl, "E_pi[r] must weight each reward by pi(y): sum_y pi(y) r(y)."),
    ]
    if (pi == 0).any() and got.isnan().any():
        raise _Stop(_fail(name, f"returned nan for {context}: pi(y) log pi(y) is 0 * log 0 = nan in floating "
                                "point, but its limit is 0 -- a response the policy never produces adds "
                                "nothing to the KL (torch.special.xlogy, or torch.where on pi > 0)."))
    _compare(name, got, expected, wrongs, context)


@_checker
def check_beta_limits(fn) -> Verdict:
    """Exercise (02, needs thought): ``beta_limits(pi_ref, r)`` -> (pi* as beta -> 0, pi* as beta -> infinity),
    two (K,) distributions. With several responses sharing the top reward, the beta -> 0 limit keeps
    pi_ref's proportions among them."""
    name = "beta_limits"
    cases = [(_t([0.05, 0.20, 0.30, 0.25, 0.15, 0.05]), _t([2.0, 1.0, 0.3, -0.4, -1.0, -2.0]), "the toy world"),
             (_t([0.1, 0.4, 0.2, 0.3]), _t([1.0, 0.0, 1.0, -1.0]), "two responses tie for the top reward")]
    for pi_ref, r, context in cases:
        try:
            out = _call(name, fn, pi_ref.clone(), r.clone())
            small, large = (torch.as_tensor(x, dtype=torch.float64) for x in out)
        except _Stop:
            raise
        except Exception:
            raise _Stop(_fail(name, "return two distributions: (the beta -> 0 limit, the beta -> infinity limit).")) from None
        top = r == r.max()
        expected_small = torch.where(top, pi_ref, torch.zeros_like(pi_ref))
        expected_small = expected_small / expected_small.sum()
        uniform_top = top.double() / top.sum()
        onehot = torch.zeros_like(pi_ref)
        onehot[int(r.argmax())] = 1.0
        pair = torch.stack([small, large]) if small.shape == large.shape else small
        wrongs = [
            (torch.stack([pi_ref, expected_small]), "the two limits are swapped: a *large* beta makes the KL penalty "
                                                    "dominate (pi* -> pi_ref); a small beta lets the reward win."),
            (torch.stack([uniform_top, pi_ref]), "with tied top rewards, pi* -> pi_ref restricted to the tied responses "
                                                 "and renormalised: exp(r/beta) is the same for them, pi_ref still weighs them."),
            (torch.stack([onehot, pi_ref]), "with tied top rewards the limit is not one response: exp(r/beta) treats "
                                            "the tied ones alike, so pi_ref's proportions among them survive."),
            (torch.stack([pi_ref, pi_ref]), "as beta -> 0 pi* does not stay at pi_ref: exp(r / beta) grows fastest for "
                                            "the highest reward and swamps every other response."),
            (torch.stack([expected_small, torch.full_like(pi_ref, 1 / len(pi_ref))]),
             "as beta -> infinity the penalty keeps pi* at pi_ref, not at the uniform distribution."),
        ]
        _compare(name, pair, torch.stack([expected_small, pi_ref]), wrongs, context)
    return _pass(name, "beta -> 0: pi_ref restricted to the best responses; beta -> infinity: pi_ref itself.")
