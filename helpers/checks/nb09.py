"""Checkers of notebook 09 (does DPO reach pi*?)."""

from __future__ import annotations

import math

import torch

from helpers.checks._core import Verdict, _call, _checker, _compare, _fail, _pass, _Stop, _t


def _snis(r: torch.Tensor, beta: float):
    """pi*'s reward, KL and ESS per prompt from (P, M) pi_ref samples' rewards, and slips of it."""
    logits = r / beta
    m = r.shape[1]
    w = torch.softmax(logits, -1)
    reward = (w * r).sum(-1)
    log_mean_exp = torch.logsumexp(logits, -1) - math.log(m)
    kl = reward / beta - log_mean_exp
    ess = 1.0 / (w ** 2).sum(-1)
    return w, reward, kl, ess, log_mean_exp


def _three(name, out):
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise _Stop(_fail(name, "return three (P,) tensors: (reward, kl, ess)."))
    try:
        return [torch.as_tensor(v.detach() if torch.is_tensor(v) else v, dtype=torch.float64) for v in out]
    except Exception:
        raise _Stop(_fail(name, "return three tensors of numbers: (reward, kl, ess).")) from None


@_checker
def check_snis_optimum(fn) -> Verdict:
    """Exercise (09): ``snis_optimum(rewards, beta)`` -> (reward, kl, ess), each (P,): pi*_beta's expected
    reward, KL(pi* || pi_ref) and effective sample size per prompt, from (P, M) rewards of pi_ref samples."""
    name = "snis_optimum"
    g = torch.Generator().manual_seed(0)
    cases = [(torch.randn(3, 8, generator=g, dtype=torch.float64) * 0.5, 0.2, "3 prompts x 8 samples, beta = 0.2"),
             (torch.randn(2, 64, generator=g, dtype=torch.float64), 1.0, "2 prompts x 64 samples, beta = 1"),
             (_t([[0.0, 0.0, 0.0, 0.0]]), 0.5, "one prompt, four equal rewards")]
    for r, beta, context in cases:
        reward, kl, ess = _three(name, _call(name, fn, r.clone(), beta))
        w, reward_ok, kl_ok, ess_ok, log_z = _snis(r, beta)
        unnormalised = torch.exp(r / beta)
        _compare(name + " (reward)", reward, reward_ok, [
            ((unnormalised * r).mean(-1), "the weights are not normalised: divide exp(r_i / beta) by their sum over "
                                          "the prompt's samples (a softmax), so they sum to 1."),
            (r.mean(-1), "that is pi_ref's mean reward: weight each sample by w_i = softmax_i(r_i / beta)."),
            ((torch.softmax(r * beta, -1) * r).sum(-1), "the weights are softmax(r * beta); pi* tilts by "
                                                       "exp(r / beta)."),
        ], context)
        _compare(name + " (kl)", kl, kl_ok, [
            (reward_ok / beta - (log_z + math.log(r.shape[1])),
             "log Z is the log of the *mean* of exp(r / beta) over the M samples (Z = E_{pi_ref}[exp(r/beta)]): "
             "logsumexp is the log of the sum, too large by log M."),
            (beta * reward_ok, "KL(pi* || pi_ref) = E_{pi*}[r] / beta - log Z, not beta * E[r]."),
            (reward_ok / beta, "log Z is missing: KL = E_{pi*}[r] / beta - log Z."),
            (reward_ok / beta + log_z, "the sign of log Z: KL = E_{pi*}[r] / beta - log Z."),
        ], context)
        _compare(name + " (ess)", ess, ess_ok, [
            (w.sum(-1), "the sum of normalised weights is always 1: the ESS is 1 / sum_i w_i^2."),
            ((w ** 2).sum(-1), "that is sum_i w_i^2; the ESS is its inverse."),
            (torch.full_like(ess_ok, float(r.shape[1])), "the ESS is M only when every weight is equal: "
                                                        "1 / sum_i w_i^2."),
        ], context)
    return _pass(name, "all three cases match.")


@_checker
def check_optimal_margin(fn) -> Verdict:
    """Exercise (09): ``optimal_margin(reward_gap, beta, tau)`` -> the h = (log-ratio of y_w) - (log-ratio of
    y_l) that minimises the expected DPO loss when the labels come from a Bradley-Terry annotator of
    temperature tau (tau = 0: certain labels)."""
    name = "optimal_margin"
    cases = [(0.5, 0.1, 1.0), (-0.3, 0.5, 2.0), (1.2, 2.0, 0.5), (0.0, 0.1, 1.0)]
    for gap, beta, tau in cases:
        got = _call(name, fn, gap, beta, tau)
        try:
            got = float(got)
        except Exception:
            return _fail(name, f"returned {type(got).__name__}; return one number.")
        expected = gap / (tau * beta)
        p = 1 / (1 + math.exp(-gap / tau))
        wrongs = [(gap / beta, "tau is missing: the annotator's label probability is sigmoid(gap / tau)."),
                  (gap * beta / tau, "beta divides: at the minimum beta * h = logit(p) = gap / tau."),
                  (p / beta, "the minimum is where sigmoid(beta * h) = p, i.e. beta * h = logit(p), not p."),
                  (gap / tau, "beta is missing: at the minimum beta * h = gap / tau.")]
        context = f"gap {gap}, beta {beta}, tau {tau}"
        _compare(name, _t(got), _t(expected), [(_t(v), why) for v, why in wrongs], context)
    got = _call(name, fn, 0.5, 0.1, 0.0,
                hint=" at tau = 0 (certain labels): which h minimises -log sigmoid(beta * h)?")
    try:
        got = float(got)
    except Exception:
        return _fail(name, "tau = 0 (certain labels): return a number (float('inf')), not an error.")
    if got != math.inf:
        return _fail(name, f"tau = 0 (certain labels, the better response always wins) gave {got:.4g}: the loss "
                           f"-log sigmoid(beta * h) keeps falling as h grows, so no finite h minimises it.")
    return _pass(name, "all five cases match, tau = 0 included.")
