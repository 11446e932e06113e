"""Exercise checkers: each ``check_xxx(fn)`` runs the reader's function on a few inputs and says, in
plain words, what is wrong (or that it is right).

A checker returns a ``Verdict``: truthy when the answer is right, shown in a notebook as one line
("✓ ..." or "✗ ..."). It never raises: a stub that raises ``NotImplementedError`` gets a friendly
"not implemented yet", any other exception is reported with its message.

How a checker diagnoses: it compares the reader's output with the right answer; on a mismatch it
compares it with the outputs of the typical *wrong* answers (wrong sign, missing beta, arguments
swapped, mean instead of sum, log(sigmoid) overflow, ...) and names the first that matches.

This is a flat module: append new ``check_*`` functions at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from helpers import toy
from helpers.losses import bradley_terry_loss, dpo_loss


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: ``ok`` and a one-line ``message``; truthy iff ok."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return self.message

    def __str__(self) -> str:
        return self.message


def _pass(name: str, what: str) -> Verdict:
    return Verdict(True, f"✓ {name}: correct -- {what}")


def _fail(name: str, why: str) -> Verdict:
    return Verdict(False, f"✗ {name}: {why}")


class _Stop(Exception):
    """Carries a failing Verdict out of a nested helper."""

    def __init__(self, verdict: Verdict):
        super().__init__(verdict.message)
        self.verdict = verdict


def _run(name: str, fn, *args) -> torch.Tensor:
    """Call the reader's function; turn its result into a float64 tensor or stop with a verdict."""
    try:
        out = fn(*args)
    except NotImplementedError:
        raise _Stop(_fail(name, "not implemented yet -- replace `raise NotImplementedError` with your code.")) from None
    except Exception as exc:  # the reader's code may fail in any way; report it, do not crash the notebook
        raise _Stop(_fail(name, f"raised {type(exc).__name__}: {exc}")) from None
    if isinstance(out, tuple):  # e.g. a dpo_loss that also returns the rewards
        out = out[0]
    try:
        return torch.as_tensor(out.detach() if torch.is_tensor(out) else out, dtype=torch.float64)
    except Exception:
        raise _Stop(_fail(name, f"returned {type(out).__name__}, expected a tensor of numbers.")) from None


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5, equal_nan: bool = False) -> bool:
    """Same shape and values; nan/inf never match unless ``equal_nan`` (for diagnosing wrong answers)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape:
        return False
    if not equal_nan:
        return bool(torch.isfinite(a).all()) and torch.allclose(a, b, rtol=tol, atol=tol)
    same_nonfinite = (~torch.isfinite(a) & ~torch.isfinite(b) & ((a == b) | (a.isnan() & b.isnan())))
    finite_close = torch.isclose(a, b, rtol=tol, atol=tol)
    return bool((same_nonfinite | finite_close).all())


def _compare(name: str, got: torch.Tensor, expected: torch.Tensor, wrongs, context: str, tol: float = 1e-5):
    """Stop with a diagnosis unless ``got`` matches ``expected``.

    Args:
        wrongs: [(value_of_a_typical_wrong_answer, explanation)], tried in order.
        context: the inputs, in words, for the generic message.
    """
    if _close(got, expected, tol):
        return
    for value, why in wrongs:
        if _close(got, value, tol, equal_nan=True):
            raise _Stop(_fail(name, why))
    if got.shape != expected.shape:
        raise _Stop(_fail(name, f"returned shape {tuple(got.shape)}, expected {tuple(expected.shape)} ({context})."))
    if not torch.isfinite(got).all():
        raise _Stop(_fail(name, f"returned inf or nan ({context}): something overflows; "
                                "compute in log space (logsumexp / logsigmoid / log_softmax)."))
    i = int((got - expected).abs().flatten().argmax())
    raise _Stop(_fail(name, f"wrong value ({context}): got {got.flatten()[i].item():.4g} where "
                            f"{expected.flatten()[i].item():.4g} is expected."))


def _checker(fn):
    """Turn a _Stop raised inside a checker body into its Verdict."""

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _Stop as stop:
            return stop.verdict

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


def _t(values, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


# ============================================================================ notebook 00


@_checker
def check_log_softmax(fn) -> Verdict:
    """Exercise: ``log_softmax(logits)`` -> log-probabilities over the last dimension, without overflow."""
    name = "log_softmax"
    cases = [
        (_t([1.0, 2.0, 3.0]), "logits [1, 2, 3]"),
        (_t([[0.5, -1.0, 2.0, 0.0], [3.0, 3.0, -2.0, 1.0]]), "a (2, 4) batch of logits"),
        (_t([1000.0, 1001.0, 1002.0]), "logits [1000, 1001, 1002]"),
        (_t([-1000.0, -1001.0, -999.0]), "logits [-1000, -1001, -999]"),
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
    return _pass(name, "sum_y p(y) log(p(y)/q(y)), zero when p = q, and p(y) = 0 terms count as 0.")


# ============================================================================ notebook 01


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


# ============================================================================ notebook 02


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
    cases = [(pi_a, 0.5, "pi = pi* at beta 1, evaluated at beta = 0.5"),
             (pi_b, 2.0, "pi = [0.4, 0.2, 0.1, 0.1, 0.1, 0.1], beta = 2")]
    for pi, beta, context in cases:
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
            (world.r.mean() - beta * kl, "E_pi[r] must weight each reward by pi(y): sum_y pi(y) r(y)."),
        ]
        _compare(name, got, expected, wrongs, context)
    return _pass(name, "sum_y pi(y) r(y) - beta * sum_y pi(y) log(pi(y) / pi_ref(y)).")


# ============================================================================ notebook 03


@_checker
def check_reward_from_policy(fn) -> Verdict:
    """Exercise: ``reward_from_policy(pi_star, pi_ref, beta, log_z)`` = beta log(pi*/pi_ref) + beta log Z."""
    name = "reward_from_policy"
    world = toy.make_toy()
    for beta in (0.5, 2.0):
        pi_star = toy.optimal_policy(world.pi_ref, world.r, beta)
        log_z = toy.log_partition(world.pi_ref, world.r, beta)
        got = _run(name, fn, pi_star.clone(), world.pi_ref.clone(), beta, log_z.clone())
        ratio = torch.log(pi_star) - torch.log(world.pi_ref)
        wrongs = [
            (beta * ratio, "the partition term is missing: r = beta log(pi*/pi_ref) + beta log Z. Without it you "
                           "get r only up to a constant (enough for preferences, as we will see, but not r itself)."),
            (beta * ratio + log_z, "log Z must be multiplied by beta too: r = beta (log(pi*/pi_ref) + log Z)."),
            (ratio + log_z, "beta is missing: r = beta log(pi*/pi_ref) + beta log Z."),
            (-beta * ratio + beta * log_z, "the log-ratio is upside down: log(pi* / pi_ref), policy on top."),
            (beta * ratio - beta * log_z, "wrong sign of the log Z term: from pi* = pi_ref exp(r/beta) / Z, "
                                          "r / beta = log(pi*/pi_ref) + log Z."),
        ]
        _compare(name, got, world.r, wrongs, f"the toy world, beta = {beta}")
    return _pass(name, "beta log(pi*/pi_ref) + beta log Z recovers the true reward exactly.")


@_checker
def check_dpo_loss(fn) -> Verdict:
    """Exercise: ``dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
    beta)`` -> (B,) per-pair -log sigmoid(beta * ((pc - pr) - (rc - rr)))."""
    name = "dpo_loss"
    f32 = torch.float32
    cases = [
        (_t([-5.0, -7.0, -3.0], f32), _t([-6.0, -6.0, -4.0], f32), _t([-5.5, -7.0, -2.0], f32),
         _t([-5.5, -6.5, -4.5], f32), 0.5, "three pairs, beta = 0.5"),
        (_t([-20.0, -9.0], f32), _t([-15.0, -12.0], f32), _t([-18.0, -10.0], f32), _t([-16.0, -11.0], f32),
         2.0, "two pairs, beta = 2"),
        (_t([-10.0, -900.0], f32), _t([-900.0, -10.0], f32), _t([-10.0, -10.0], f32), _t([-10.0, -10.0], f32),
         0.5, "log-ratio margins of +-890 (beta * h = +-445) in float32"),
    ]
    at_ref = _run(name, fn, _t([-3.0, -8.0], f32), _t([-4.0, -2.0], f32), _t([-3.0, -8.0], f32), _t([-4.0, -2.0], f32), 0.1)
    if at_ref.numel() == 1 and at_ref.dim() == 0:
        raise _Stop(_fail(name, "returned one number; return the per-pair losses, shape (B,) -- the training "
                                "loop takes the mean (helpers.losses.dpo_loss does the same)."))
    for pc, pr, rc, rr, beta, context in cases:
        got = _run(name, fn, pc.clone(), pr.clone(), rc.clone(), rr.clone(), beta)
        expected = dpo_loss(pc.double(), pr.double(), rc.double(), rr.double(), beta)[0]
        h = ((pc - pr) - (rc - rr)).double()
        wrongs = [
            (-F.logsigmoid(-beta * h), "the margin has the wrong sign: h = (log pi(y_w) - log pi(y_l)) - "
                                       "(log ref(y_w) - log ref(y_l)); check chosen vs rejected and policy vs reference."),
            (F.logsigmoid(beta * h), "wrong sign: the loss is -log sigmoid(beta * h), which is >= 0."),
            (-F.logsigmoid(h), "beta is missing: the implicit reward is beta * log(pi / pi_ref), so the logit is beta * h."),
            (-F.logsigmoid(h / beta), "h is multiplied by beta, not divided by it."),
            (-F.logsigmoid(beta * (pc - pr).double()), "the reference log-probs are missing: DPO compares the policy's "
                                                        "log-ratio with the reference's."),
            (-F.logsigmoid(beta * h).mean(), "you returned the mean; return one loss per pair, shape (B,)."),
            (-F.logsigmoid(beta * h).sum(), "you returned the sum; return one loss per pair, shape (B,)."),
        ]
        if h.abs().max() > 500 and not torch.isfinite(got).all():
            raise _Stop(_fail(name, f"returned inf for {context}: torch.log(torch.sigmoid(x)) is log(0) = -inf "
                                    "once sigmoid underflows (x < -88 in float32). Use F.logsigmoid(x)."))
        _compare(name, got, expected, wrongs, context, tol=1e-4)
    if not _close(at_ref, _t([math.log(2.0), math.log(2.0)]), 1e-4):
        raise _Stop(_fail(name, f"at pi = pi_ref the loss must be ln 2 = 0.6931 per pair, got {at_ref.tolist()}."))
    return _pass(name, "-log sigmoid(beta * h) per pair, ln 2 at pi = pi_ref, finite at huge margins.")


# ============================================================================ notebook 08 (RLHF)


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


# ============================================================================ notebooks 04-07 (DPO on GPT-2)


def _lm_case(seed: int, batch: int, width: int, vocab: int, dtype=torch.float32):
    """Random logits (B, T, V) and labels (B, T) with a masked prompt and right padding."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, width, vocab, generator=g) * 3).to(dtype)
    labels = torch.randint(0, vocab, (batch, width), generator=g)
    for b in range(batch):  # prompt of 2-3 tokens, then response, then padding
        prompt = 2 + b % 2
        length = width - b
        labels[b, :prompt] = -100
        labels[b, length:] = -100
    return logits, labels


def _seq_logps_variant(logits, labels, shift=True, average=False, normalise=True, mask=True):
    """A sequence log-prob with one of the typical mistakes switched on (float64)."""
    logits = logits.double()
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    keep = labels != -100
    logps = F.log_softmax(logits, -1) if normalise else logits
    per_token = torch.gather(logps, 2, labels.clamp(min=0).unsqueeze(2)).squeeze(2)
    if mask:
        per_token = per_token * keep
    total = per_token.sum(-1)
    return total / keep.sum(-1).clamp(min=1) if average else total


@_checker
def check_sequence_logprobs(fn) -> Verdict:
    """Exercise (04): ``sequence_logprobs(logits, labels)`` -> (B,) log pi(y|x): shift by one, log-softmax in
    float32, gather the label's log-prob, zero where the label is -100, sum over tokens."""
    name = "sequence_logprobs"
    cases = [(*_lm_case(0, 3, 7, 11), "3 rows of 7 tokens, vocabulary 11, prompt and padding labelled -100"),
             (*_lm_case(1, 2, 9, 50), "2 rows of 9 tokens, vocabulary 50")]
    for logits, labels, context in cases:
        got = _run(name, fn, logits.clone(), labels.clone())
        expected = _seq_logps_variant(logits, labels)
        if got.shape == labels[:, 1:].shape or got.shape == labels.shape:
            raise _Stop(_fail(name, "returned per-token log-probs; sum them over the tokens of each row, shape (B,)."))
        no_shift = logits.double()
        wrongs = [
            (_seq_logps_variant(logits, labels, shift=False),
             "no shift: the logits at position t predict token t + 1, so compare logits[:, :-1] with labels[:, 1:]."),
            (_seq_logps_variant(no_shift[:, 1:], labels[:, :-1], shift=False),
             "shifted the wrong way: logits[:, :-1] (positions 0..T-2) predict labels[:, 1:] (tokens 1..T-1)."),
            (_seq_logps_variant(logits, labels, average=True),
             "you averaged over tokens; DPO sums them: log pi(y|x) = sum_t log pi(y_t | x, y_<t)."),
            (_seq_logps_variant(logits, labels, normalise=False),
             "you gathered raw logits; apply log_softmax over the vocabulary first."),
            (_seq_logps_variant(logits, labels, mask=False),
             "the -100 positions are scored too: zero them with the mask labels != -100 after the gather."),
        ]
        _compare(name, got, expected, wrongs, context, tol=1e-4)
    low, labels = _lm_case(2, 2, 8, 40)
    low = (low * 8).to(torch.bfloat16)
    got = _run(name, fn, low.clone(), labels.clone())
    if not _close(got, _seq_logps_variant(low.float(), labels), 1e-4):
        in_bf16 = torch.gather(F.log_softmax(low[:, :-1], -1), 2, labels[:, 1:].clamp(min=0).unsqueeze(2)).squeeze(2)
        if _close(got, (in_bf16.double() * (labels[:, 1:] != -100)).sum(-1), 1e-4):
            raise _Stop(_fail(name, "bf16 logits were log-softmaxed in bf16 (2-3 significant digits); "
                                    "upcast with logits.float() first."))
        raise _Stop(_fail(name, "wrong value for bf16 logits: upcast with logits.float() before the log-softmax."))
    return _pass(name, "shifted, normalised in float32, masked, summed -- one log pi(y|x) per row.")


def _labels_case(prompt_length: int, length: int, width: int, pad: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 30, (width,), generator=g)
    ids[length - 1] = pad  # the EOS, with pad = eos
    ids[length:] = pad
    return ids


@_checker
def check_response_labels(fn) -> Verdict:
    """Exercise (04): ``response_labels(input_ids, prompt_length, length)`` -> (T,) labels: the token id on the
    response and its EOS (positions prompt_length .. length-1), -100 on the prompt and on the padding.
    Here pad = eos (GPT-2 has no pad token)."""
    name = "response_labels"
    eos = 0
    cases = [(3, 8, 11, 1, "3 prompt tokens, 4 response tokens + EOS, 3 pads (pad = eos = 0)"),
             (2, 5, 5, 2, "2 prompt tokens, 2 response tokens + EOS, no padding"),
             (4, 6, 9, 3, "4 prompt tokens, 1 response token + EOS, 3 pads")]
    for prompt_length, length, width, seed, context in cases:
        ids = _labels_case(prompt_length, length, width, eos, seed)
        try:
            out = fn(ids.clone(), prompt_length, length)
        except NotImplementedError:
            return _fail(name, "not implemented yet -- replace `raise NotImplementedError` with your code.")
        except Exception as exc:
            return _fail(name, f"raised {type(exc).__name__}: {exc}")
        got = torch.as_tensor(out).long()
        pos = torch.arange(width)
        expected = torch.where((pos >= prompt_length) & (pos < length), ids, torch.full_like(ids, -100))
        if got.shape != expected.shape:
            return _fail(name, f"returned shape {tuple(got.shape)}, expected ({width},) -- one label per input token "
                               "(the shift happens later, in sequence_logprobs).")
        if torch.equal(got, expected):
            continue
        by_pad = torch.where((pos >= prompt_length) & (ids != eos), ids, torch.full_like(ids, -100))
        wrongs = [
            (by_pad, "the EOS is masked: you decided what counts by comparing ids with the pad id, and pad = eos. "
                     "Use the lengths (positions < length), so the EOS is still scored and the model learns to stop."),
            (torch.where(pos < length, ids, torch.full_like(ids, -100)),
             "the prompt is scored: log pi(y|x) counts the response only; set the first prompt_length labels to -100."),
            (torch.where(pos >= prompt_length, ids, torch.full_like(ids, -100)),
             "the padding is scored: set every label from position `length` on to -100."),
            (torch.where((pos >= prompt_length + 1) & (pos < length), ids, torch.full_like(ids, -100)),
             "off by one: the first response token (position prompt_length) is masked."),
            (torch.where((pos >= prompt_length - 1) & (pos < length), ids, torch.full_like(ids, -100)),
             "off by one: the last prompt token is scored."),
            (torch.where((pos >= prompt_length) & (pos < length - 1), ids, torch.full_like(ids, -100)),
             "the EOS is masked: it is the last real token (position length - 1) and must be scored."),
            (torch.cat([expected[1:], torch.tensor([-100])]),
             "the labels are already shifted; keep them aligned with input_ids -- sequence_logprobs shifts."),
        ]
        for value, why in wrongs:
            if torch.equal(got, value):
                return _fail(name, why)
        return _fail(name, f"wrong labels ({context}): got {got.tolist()}, expected {expected.tolist()}.")
    return _pass(name, "response and EOS scored, prompt and padding -100, decided by lengths not by the pad id.")


@_checker
def check_sft_loss(fn) -> Verdict:
    """Exercise (05): ``sft_loss(logits, input_ids, attention_mask)`` -> scalar mean next-token cross-entropy over
    the real tokens (padding excluded), in nats per token."""
    name = "sft_loss"
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 6, 13, generator=g) * 2
    input_ids = torch.randint(0, 13, (3, 6), generator=g)
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    input_ids = input_ids.masked_fill(attention_mask == 0, 1)  # pad id 1
    got = _run(name, fn, logits.clone(), input_ids.clone(), attention_mask.clone())
    lp = F.log_softmax(logits.double(), -1)
    nll = -torch.gather(lp[:, :-1], 2, input_ids[:, 1:, None]).squeeze(2)  # (B, T-1)
    keep = attention_mask[:, 1:].bool()
    expected = nll[keep].mean()
    nll_ns = -torch.gather(lp, 2, input_ids[:, :, None]).squeeze(2)
    row_means = torch.stack([nll[b][keep[b]].mean() for b in range(3)]).mean()
    wrongs = [
        (nll_ns[attention_mask.bool()].mean(), "no shift: the logits at position t predict token t + 1 "
                                               "(compare logits[:, :-1] with input_ids[:, 1:])."),
        (nll.mean(), "the padding is in the loss: average only where attention_mask[:, 1:] == 1."),
        (nll[keep].sum(), "you summed; return the mean over the real tokens (nats per token)."),
        (row_means, "you averaged each row, then the rows: short rows count as much as long ones; "
                    "average over all real tokens of the batch at once."),
        (-expected, "wrong sign: cross-entropy is -log p, positive."),
    ]
    if got.numel() != 1:
        return _fail(name, f"returned shape {tuple(got.shape)}; return one number (the mean over real tokens).")
    _compare(name, got.reshape(()), expected, [(w.reshape(()), why) for w, why in wrongs],
             "3 rows with 6, 4 and 3 real tokens", tol=1e-4)
    return _pass(name, "shifted, padding excluded, mean over all real tokens of the batch.")


@_checker
def check_make_pairs(fn) -> Verdict:
    """Exercise (05): ``make_pairs(prompt, responses, rewards)`` -> list of {"prompt", "chosen", "rejected"}: every
    pair of samples with different rewards, chosen = the higher reward; ties dropped."""
    name = "make_pairs"
    cases = [
        ("the film", [" was great.", " was dull.", " was fine."], [0.8, -0.4, 0.2], "3 samples, rewards 0.8, -0.4, 0.2"),
        ("a nurse", [" smiles.", " cries.", " waits.", " sings."], [0.3, -0.3, 0.0, 0.3], "4 samples, one tie"),
    ]
    for prompt, responses, rewards, context in cases:
        try:
            out = fn(prompt, list(responses), list(rewards))
        except NotImplementedError:
            return _fail(name, "not implemented yet -- replace `raise NotImplementedError` with your code.")
        except Exception as exc:
            return _fail(name, f"raised {type(exc).__name__}: {exc}")
        try:
            got = {(r["prompt"], r["chosen"], r["rejected"]) for r in out}
            n_got = len(list(out))
        except Exception:
            return _fail(name, "return a list of dicts with keys 'prompt', 'chosen', 'rejected'.")
        expected, swapped, with_ties = set(), set(), set()
        for i in range(len(responses)):
            for j in range(i + 1, len(responses)):
                hi, lo = (i, j) if rewards[i] > rewards[j] else (j, i)
                if rewards[i] == rewards[j]:
                    with_ties.add((prompt, responses[hi], responses[lo]))
                    continue
                expected.add((prompt, responses[hi], responses[lo]))
                swapped.add((prompt, responses[lo], responses[hi]))
        if got == expected and n_got == len(expected):
            continue
        if got == swapped:
            return _fail(name, "chosen and rejected are swapped: chosen is the response with the higher reward.")
        if got == expected | with_ties:
            return _fail(name, "ties are kept: two responses with equal reward carry no preference; drop the pair.")
        if got < expected:
            return _fail(name, f"only {len(got)} of the {len(expected)} pairs ({context}); pair every two samples "
                               "(itertools.combinations), not only the best with the worst.")
        if n_got != len(got):
            return _fail(name, "some pairs appear twice; each unordered pair of samples once.")
        return _fail(name, f"wrong pairs ({context}): got {sorted(got)}, expected {sorted(expected)}.")
    return _pass(name, "all k(k-1)/2 pairs, higher reward chosen, ties dropped.")


def _tiny_lm(seed: int, vocab: int = 23):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=16, n_layer=1, n_head=2, n_embd=16, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(config)


def _pair_batch(seed: int, n_pairs: int = 3, vocab: int = 23):
    from helpers.data import collate_preferences

    g = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(n_pairs):
        prompt = torch.randint(1, vocab, (2 + i % 2,), generator=g).tolist()
        ex = {"prompt_input_ids": prompt}
        for name, n in (("chosen", 2 + i), ("rejected", 4 - i % 3)):
            resp = torch.randint(1, vocab, (n,), generator=g).tolist() + [0]
            ex[f"{name}_input_ids"] = prompt + resp
            ex[f"{name}_labels"] = [-100] * len(prompt) + resp
        examples.append(ex)
    return collate_preferences(examples, pad_token_id=0)


@_checker
def check_dpo_batch_loss(fn) -> Verdict:
    """Exercise (06): ``dpo_batch_loss(policy, ref_model, batch, beta)`` -> the mean DPO loss of a concatenated
    batch (chosen rows first), with gradients to the policy only."""

    name = "dpo_batch_loss"
    policy, ref = _tiny_lm(1), _tiny_lm(2)
    batch = _pair_batch(3)
    beta = 0.5
    try:
        out = fn(policy, ref, {k: v.clone() for k, v in batch.items()}, beta)
    except NotImplementedError:
        return _fail(name, "not implemented yet -- replace `raise NotImplementedError` with your code.")
    except Exception as exc:
        return _fail(name, f"raised {type(exc).__name__}: {exc}")
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
    try:
        out = fn(policy_logps.clone(), ref_logps.clone(), prompt_index.clone())
        mean, se = (float(v) for v in out)
    except NotImplementedError:
        return _fail(name, "not implemented yet -- replace `raise NotImplementedError` with your code.")
    except Exception as exc:
        return _fail(name, f"raised {type(exc).__name__}: {exc} (return two numbers: mean, standard error)")
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
