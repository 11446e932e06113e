"""Checkers of notebook 00 (set-up and tour)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helpers import toy
from helpers.checks._core import Verdict, _call, _checker, _close, _compare, _fail, _pass, _run, _Stop, _t


@_checker
def check_log_softmax(fn) -> Verdict:
    """Exercise: ``log_softmax(logits)`` -> log-probabilities over the last dimension, without overflow."""
    name = "log_softmax"
    cases = [
        (_t([1.0, 2.0, 3.0]), "logits [1, 2, 3]"),
        (_t([[0.5, -1.0, 2.0, 0.0], [3.0, 3.0, -2.0, 1.0]]), "a (2, 4) batch of logits"),
        (_t([1000.0, 1001.0, 1002.0]), "logits [1000, 1001, 1002]"),
        (_t([-1000.0, -1001.0, -999.0]), "logits [-1000, -1001, -999]"),
        (_t([0.0, -1000.0]), "logits [0, -1000] (a spread of 1000)"),
    ]
    for logits, context in cases:
        got = _run(name, fn, logits.clone())
        expected = F.log_softmax(logits, -1)
        wrongs = [
            (torch.softmax(logits, -1), "you returned probabilities (softmax); take their log -- or better, "
                                        "compute logits - logsumexp(logits) directly."),
            (logits, "you returned the logits unchanged; subtract logsumexp(logits) so that exp of the result sums to 1."),
            (logits - logits.max(-1, keepdim=True).values, "subtracting the max alone does not normalise; "
                                                           "subtract logsumexp(logits) instead."),
            (F.log_softmax(logits, 0) if logits.dim() == 2 else None,
             "you normalised over the batch (dim 0); normalise over the last dimension (the vocabulary / responses)."),
        ]
        if _close(got, torch.log(torch.softmax(logits, -1)), equal_nan=True) and not torch.isfinite(got).all():
            raise _Stop(_fail(name, f"returned -inf for {context}: that is torch.log(torch.softmax(...)) -- softmax "
                                    "is stable, but its e^-1000 underflows to 0 and log 0 = -inf. Stay in log space: "
                                    "logits - m - log(sum(exp(logits - m)))."))
        if logits.abs().max() >= 1000 and not torch.isfinite(got).all():
            raise _Stop(_fail(name, f"returned inf/nan for {context}: exp(1000) overflows (exp(-1000) underflows). "
                                    "Use the log-sum-exp trick: logits - m - log(sum(exp(logits - m))), m = max."))
        _compare(name, got, expected, [w for w in wrongs if w[0] is not None], context)
    return _pass(name, "normalised over the last dimension and stable at logits of +-1000.")


@_checker
def check_kl_divergence(fn) -> Verdict:
    """Exercise: ``kl_divergence(p, q)`` = KL(p || q) = sum_y p(y) log(p(y) / q(y)), in nats."""
    name = "kl_divergence"
    cases = [
        (_t([0.5, 0.3, 0.2]), _t([0.2, 0.3, 0.5]), "p = [0.5, 0.3, 0.2], q = [0.2, 0.3, 0.5]"),
        (_t([0.7, 0.1, 0.1, 0.1]), _t([0.25, 0.25, 0.25, 0.25]), "p = [0.7, 0.1, 0.1, 0.1], q uniform"),
        (_t([0.6, 0.4, 0.0]), _t([0.3, 0.3, 0.4]), "p = [0.6, 0.4, 0.0] (a zero in p), q = [0.3, 0.3, 0.4]"),
    ]
    same = _run(name, fn, _t([0.2, 0.5, 0.3]), _t([0.2, 0.5, 0.3]))
    if not _close(same, _t(0.0)):
        if same.numel() != 1:
            raise _Stop(_fail(name, f"returned shape {tuple(same.shape)}; KL(p || q) is one number: sum over y."))
        raise _Stop(_fail(name, f"KL(p || p) must be 0, got {same.item():.4g}."))
    for p, q, context in cases:
        got = _run(name, fn, p.clone(), q.clone())
        expected = toy.kl_divergence(p, q)
        with torch.no_grad():
            logratio = torch.where(p > 0, torch.log(p) - torch.log(q), torch.zeros_like(p))
        wrongs = [
            (toy.kl_divergence(q, p),
             "you computed KL(q || p): the arguments are swapped. KL is not symmetric; "
             "weight by the first argument p: sum p log(p/q)."),
            (-expected, "wrong sign: KL(p || q) = sum p log(p / q) is >= 0."),
            ((p * logratio).mean(), "you took the mean over responses; KL is a sum over y "
                                    "(your value is K times too small)."),
            (logratio.sum(), "each log-ratio must be weighted by p(y): sum_y p(y) log(p(y)/q(y))."),
            (p * logratio, "you returned the per-response terms; sum them to one number."),
        ]
        if (p == 0).any() and not torch.isfinite(got).all():
            raise _Stop(_fail(name, f"returned nan for {context}: a response with p(y) = 0 contributes "
                                    "0 * log 0, which is 0 by convention (use torch.where or xlogy)."))
        _compare(name, got, expected, wrongs, context)
    # the other half of the support rule: mass where q has none makes the KL infinite
    got = _run(name, fn, _t([0.5, 0.5, 0.0]), _t([1.0, 0.0, 0.0]))
    context = "p = [0.5, 0.5, 0.0], q = [1.0, 0.0, 0.0]"
    if got.numel() != 1:
        raise _Stop(_fail(name, f"returned shape {tuple(got.shape)} for {context}; return one number."))
    if got.isnan().any():
        raise _Stop(_fail(name, f"returned nan for {context}: the third term is 0 * log(0 / 0); a response "
                                "with p(y) = 0 contributes 0 whatever q(y) is (torch.where on p > 0, or xlogy)."))
    if not bool(got == float("inf")):
        raise _Stop(_fail(name, f"returned {got.item():.4g} for {context}, a finite KL: p puts mass 0.5 on a "
                                "response q never produces, and 0.5 * log(0.5 / 0) = +inf. A finite answer means q "
                                "was clamped or smoothed -- the support rule says KL = inf."))
    return _pass(name, "sum_y p(y) log(p(y)/q(y)), zero when p = q, p(y) = 0 terms count as 0, and inf where "
                       "p has mass that q has not.")


@_checker
def check_kl_monte_carlo(fn) -> Verdict:
    """Exercise: ``kl_monte_carlo(p, q, samples)`` -> (estimate, standard_error) of KL(p || q) from
    indices ``samples`` drawn from p: the mean of log p(y)/q(y) and std(ddof=1)/sqrt(N)."""
    name = "kl_monte_carlo"
    p = _t([0.7, 0.2, 0.1])
    q = _t([0.2, 0.3, 0.5])
    for n, seed in ((10, 0), (1000, 1)):
        samples = torch.multinomial(p, n, replacement=True, generator=torch.Generator().manual_seed(seed))
        out = _call(name, fn, p.clone(), q.clone(), samples.clone())
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise _Stop(_fail(name, f"returned {type(out).__name__}; return two numbers: (estimate, standard_error)."))
        est, se = (torch.as_tensor(v.detach() if torch.is_tensor(v) else v, dtype=torch.float64) for v in out)
        x = torch.log(p[samples]) - torch.log(q[samples])  # (N,) one-sample estimates
        context = f"{n} samples from p = [0.7, 0.2, 0.1], q = [0.2, 0.3, 0.5]"
        _compare(name, est, x.mean(), [
            (-x.mean(), "the sign is flipped: average log p(y)/q(y) over samples y ~ p."),
            ((p * (torch.log(p) - torch.log(q))).sum(), "that is the exact KL, not an estimate from the samples: "
                                                        "average log p(y)/q(y) over the samples you were given."),
        ], context + " (the estimate)", tol=1e-8)
        _compare(name, se, x.std(unbiased=True) / n ** 0.5, [
            (x.std(unbiased=True), "that is the standard deviation of one sample's estimate; the standard error "
                                   "of the mean divides it by sqrt(N)."),
            (x.std(unbiased=False) / n ** 0.5, "use the sample standard deviation with N - 1 (unbiased=True / "
                                               "ddof=1): with 10 samples the difference is 5%."),
            (x.var(unbiased=True) / n, "that is the variance of the mean; its square root is the standard error."),
        ], context + " (the standard error)", tol=1e-8)
    return _pass(name, "mean of log p(y)/q(y) over samples from p, and std / sqrt(N) as its standard error.")
