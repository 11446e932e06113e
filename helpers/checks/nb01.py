"""Checkers of notebook 01 (preferences, Bradley-Terry)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helpers import toy
from helpers.checks._core import Verdict, _checker, _compare, _fail, _pass, _run, _Stop, _t
from helpers.losses import bradley_terry_loss


@_checker
def check_bradley_terry_prob(fn) -> Verdict:
    """Exercise: ``bradley_terry_prob(r_w, r_l)`` = P(y_w preferred to y_l) = sigmoid(r_w - r_l)."""
    name = "bradley_terry_prob"
    cases = [
        (_t([1.0, 0.0, -0.5, 2.0]), _t([0.0, 0.0, 0.5, -1.0]), "r_w = [1, 0, -0.5, 2], r_l = [0, 0, 0.5, -1]"),
        (_t([-2.0, -1.0]), _t([-1.0, -3.0]), "negative rewards r_w = [-2, -1], r_l = [-1, -3]"),
        (_t([800.0, -800.0]), _t([799.0, -799.0]), "large rewards r_w = [800, -800], r_l = [799, -799]"),
    ]
    for r_w, r_l, context in cases:
        got = _run(name, fn, r_w.clone(), r_l.clone())
        expected = torch.sigmoid(r_w - r_l)
        wrongs = [
            (torch.sigmoid(r_l - r_w), "wrong sign: that is P(y_l preferred); the winner's reward comes first, "
                                       "sigmoid(r_w - r_l)."),
            (r_w / (r_w + r_l), "r_w / (r_w + r_l) is Bradley-Terry for positive *strengths*; rewards are "
                                "logs of strengths: exp(r_w) / (exp(r_w) + exp(r_l)) = sigmoid(r_w - r_l)."),
            (r_w - r_l, "that is the reward margin, not a probability: pass it through the sigmoid."),
            (torch.sigmoid(r_w), "the probability depends on both rewards: sigmoid(r_w - r_l)."),
        ]
        if r_w.abs().max() > 500 and not torch.isfinite(got).all():
            raise _Stop(_fail(name, f"returned nan for {context}: exp(800) overflows to inf and inf/inf = nan. "
                                    "Use torch.sigmoid(r_w - r_l), which depends only on the difference."))
        _compare(name, got, expected, wrongs, context)
    return _pass(name, "sigmoid(r_w - r_l), also for negative and very large rewards.")


@_checker
def check_bt_loss(fn) -> Verdict:
    """Exercise: ``bt_loss(chosen_scores, rejected_scores)`` -> (B,) per-pair -log sigmoid(s_w - s_l)."""
    name = "bt_loss"
    cases = [
        (_t([1.0, 0.0, -0.5], torch.float32), _t([0.0, 0.0, 0.5], torch.float32), "scores s_w = [1, 0, -0.5], s_l = [0, 0, 0.5]"),
        (_t([2.0, -3.0, 0.3, 1.0], torch.float32), _t([-1.0, 1.0, 0.2, 1.0], torch.float32), "four pairs"),
        (_t([-100.0, 150.0], torch.float32), _t([100.0, -50.0], torch.float32),
         "margins s_w - s_l = [-200, 200] in float32"),
    ]
    for s_w, s_l, context in cases:
        got = _run(name, fn, s_w.clone(), s_l.clone())
        expected = bradley_terry_loss(s_w.double(), s_l.double())
        d = (s_w - s_l).double()
        wrongs = [
            (F.logsigmoid(d), "wrong sign: the loss is the *negative* log-likelihood, -log sigmoid(s_w - s_l) >= 0."),
            (-F.logsigmoid(-d), "chosen and rejected are swapped: the margin is s_w - s_l."),
            (-F.logsigmoid(d).mean(), "you returned the mean over pairs; return one loss per pair, shape (B,) -- "
                                      "the training loop takes the mean."),
            (-F.logsigmoid(d).sum(), "you returned the sum over pairs; return one loss per pair, shape (B,)."),
            (1 - torch.sigmoid(d), "that is 1 - P(y_w > y_l), not the negative log-likelihood -log sigmoid(s_w - s_l)."),
        ]
        if d.abs().max() >= 200 and not torch.isfinite(got).all():
            raise _Stop(_fail(name, f"returned inf for {context}: sigmoid(-200) underflows to 0 in float32 and "
                                    "log(0) = -inf. Use F.logsigmoid(x), never torch.log(torch.sigmoid(x))."))
        _compare(name, got, expected, wrongs, context, tol=1e-4)
    return _pass(name, "-log sigmoid(s_w - s_l) per pair, finite at margins of +-200.")


def _pairs_case(seed: int, k: int = 5, n: int = 400):
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(k, generator=gen, dtype=torch.float64)
    chosen, rejected = toy.sample_preferences(r, n, seed=seed)
    return r, chosen, rejected


@_checker
def check_win_gap(fn) -> Verdict:
    """Exercise: ``win_gap(scores, chosen, rejected)`` -> (K,) observed wins - expected wins, which is
    the gradient of the summed log-likelihood; zero at the maximum-likelihood scores."""
    name = "win_gap"
    for seed in (0, 1):
        r, chosen, rejected = _pairs_case(seed)
        scores = torch.randn(r.shape[0], generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
        got = _run(name, fn, scores.clone(), chosen.clone(), rejected.clone())
        s = scores.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.logsigmoid(s[chosen] - s[rejected]).sum(), s)
        observed = torch.bincount(chosen, minlength=r.shape[0]).double()
        p = torch.sigmoid(scores[chosen] - scores[rejected])
        wrongs = [
            (-grad, "the sign is flipped: observed wins minus expected wins (that is the log-likelihood's "
                    "gradient; you have the loss's)."),
            (grad / len(chosen), "you divided by the number of comparisons: return the sums (counts of wins)."),
            (observed - torch.zeros(r.shape[0], dtype=torch.float64).index_add_(0, chosen, p),
             "the expected wins are missing the comparisons a response *lost*: there it was expected to win "
             "1 - P(the recorded winner wins) times."),
            (observed - torch.zeros(r.shape[0], dtype=torch.float64).index_add_(0, chosen, p).index_add_(0, rejected, p),
             "a response that lost a comparison was expected to win it 1 - P (with P = sigma(s_w - s_l), the "
             "recorded winner's chance), not P: the loser's expected wins are 1 - P."),
            (observed, "that is only the observed wins; subtract the wins the scores predict."),
        ]
        _compare(name, got, grad, wrongs, f"{len(chosen)} comparisons of {r.shape[0]} responses (seed {seed})",
                 tol=1e-8)
    return _pass(name, "observed minus expected wins -- exactly the gradient of the log-likelihood.")


@_checker
def check_bayes_accuracy(fn) -> Verdict:
    """Exercise: ``bayes_accuracy(r, chosen, rejected)`` -> () the best expected pair accuracy any
    scorer can reach on Bradley-Terry labels: mean of sigma(|r_i - r_j|)."""
    name = "bayes_accuracy"
    for seed in (0, 3):
        r, chosen, rejected = _pairs_case(seed)
        got = _run(name, fn, r.clone(), chosen.clone(), rejected.clone())
        d = r[chosen] - r[rejected]
        expected = torch.sigmoid(d.abs()).mean()
        wrongs = [
            (torch.sigmoid(d).mean(), "that is the mean probability of the *recorded* label: a scorer predicts "
                                      "the likelier winner of each pair, right with probability "
                                      "max(sigma(d), 1 - sigma(d)) = sigma(|d|)."),
            ((d > 0).double().mean(), "that is how often these particular labels agree with the true order: one "
                                      "draw of the coin flips, not the expected accuracy sigma(|d|)."),
            (torch.tensor(1.0, dtype=torch.float64), "with noisy labels no scorer is always right: even the true "
                                                     "rewards lose the coin flip 1 - sigma(|d|) of the time."),
        ]
        _compare(name, got, expected, wrongs, f"{len(chosen)} pairs of {r.shape[0]} responses (seed {seed})",
                 tol=1e-8)
    return _pass(name, "sigma(|r_i - r_j|) averaged over the pairs: the ceiling of pair accuracy.")
