"""Every exercise checker accepts the right answer and rejects the typical wrong ones with the right words."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import checks, toy
from helpers.losses import bradley_terry_loss, dpo_loss


def verdict_of(checker, fn):
    v = checker(fn)
    assert isinstance(v, checks.Verdict)
    assert repr(v) == v.message and str(v) == v.message
    return v


def assert_accepts(checker, fn):
    v = verdict_of(checker, fn)
    assert v.ok and bool(v), v.message
    assert v.message.startswith("✓")


def assert_rejects(checker, fn, *words):
    v = verdict_of(checker, fn)
    assert not v.ok and not bool(v), f"accepted a wrong answer: {v.message}"
    assert v.message.startswith("✗")
    for w in words:
        assert w.lower() in v.message.lower(), f"{w!r} not in {v.message!r}"


def stub(*args):
    raise NotImplementedError


ALL_CHECKERS = [checks.check_log_softmax, checks.check_kl_divergence, checks.check_bradley_terry_prob,
                checks.check_bt_loss, checks.check_optimal_policy, checks.check_rlhf_objective,
                checks.check_reward_from_policy, checks.check_dpo_loss, checks.check_dpo_gradient,
                checks.check_beta_limits, checks.check_win_gap, checks.check_bayes_accuracy,
                checks.check_kl_monte_carlo, checks.check_count_pairs]


@pytest.mark.parametrize("checker", ALL_CHECKERS, ids=lambda c: c.__name__)
def test_stub_is_reported_as_not_implemented(checker):
    assert_rejects(checker, stub, "not implemented")


@pytest.mark.parametrize("checker", ALL_CHECKERS, ids=lambda c: c.__name__)
def test_crashing_answer_is_reported_not_raised(checker):
    def crash(*args):
        return {}["missing"]

    assert_rejects(checker, crash, "raised KeyError")


# ---------------------------------------------------------------- 00


def test_log_softmax():
    assert_accepts(checks.check_log_softmax, lambda z: z - torch.logsumexp(z, -1, keepdim=True))
    assert_accepts(checks.check_log_softmax, lambda z: F.log_softmax(z, dim=-1))
    # numpy answer works too
    assert_accepts(checks.check_log_softmax, lambda z: (z.numpy() - np.log(np.exp(z.numpy() - z.numpy().max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.numpy().max(-1, keepdims=True)))
    assert_rejects(checks.check_log_softmax, lambda z: torch.log(torch.exp(z) / torch.exp(z).sum(-1, keepdim=True)), "overflow")
    assert_rejects(checks.check_log_softmax, lambda z: torch.softmax(z, -1), "probabilities")
    assert_rejects(checks.check_log_softmax, lambda z: z, "unchanged")
    assert_rejects(checks.check_log_softmax, lambda z: z - z.max(-1, keepdim=True).values, "max alone")
    assert_rejects(checks.check_log_softmax, lambda z: z - torch.logsumexp(z, 0, keepdim=True), "dim 0")
    # the underflow idiom the exercise warns about: torch.softmax is stable, its log is not ([0, -1000])
    assert_rejects(checks.check_log_softmax, lambda z: torch.log(torch.softmax(z, -1)), "torch.log(torch.softmax")


def test_kl_divergence():
    right = lambda p, q: torch.where(p > 0, p * (torch.log(p) - torch.log(q)), 0.0).sum()
    assert_accepts(checks.check_kl_divergence, right)
    assert_accepts(checks.check_kl_divergence, lambda p, q: torch.special.xlogy(p, p).sum() - torch.special.xlogy(p, q).sum())
    assert_rejects(checks.check_kl_divergence, lambda p, q: right(q, p) if (q > 0).all() else right(q, p), "swapped")
    assert_rejects(checks.check_kl_divergence, lambda p, q: -right(p, q), "sign")
    assert_rejects(checks.check_kl_divergence, lambda p, q: torch.where(p > 0, p * torch.log(p / q), 0.0).mean(), "mean")
    assert_rejects(checks.check_kl_divergence, lambda p, q: torch.log(p / q).sum(), "weighted")
    assert_rejects(checks.check_kl_divergence, lambda p, q: (p * torch.log(p / q)).sum(), "0 * log 0")
    assert_rejects(checks.check_kl_divergence, lambda p, q: torch.where(p > 0, p * torch.log(p / q), 0.0), "shape")
    # the support rule's other half: mass where q has none is an infinite KL, not a large finite one
    clamped = lambda p, q: right(p, q.clamp(min=1e-12))
    assert_rejects(checks.check_kl_divergence, clamped, "support rule")
    assert clamped(torch.tensor([0.6, 0.4, 0.0]), torch.tensor([0.3, 0.3, 0.4])) == pytest.approx(
        right(torch.tensor([0.6, 0.4, 0.0]), torch.tensor([0.3, 0.3, 0.4])))  # right wherever q > 0


# ---------------------------------------------------------------- 01


def test_bradley_terry_prob():
    assert_accepts(checks.check_bradley_terry_prob, lambda w, l: torch.sigmoid(w - l))
    assert_accepts(checks.check_bradley_terry_prob, toy.bradley_terry_prob)
    assert_rejects(checks.check_bradley_terry_prob, lambda w, l: torch.sigmoid(l - w), "wrong sign")
    assert_rejects(checks.check_bradley_terry_prob, lambda w, l: w / (w + l), "strengths")
    assert_rejects(checks.check_bradley_terry_prob, lambda w, l: torch.exp(w) / (torch.exp(w) + torch.exp(l)), "overflow")
    assert_rejects(checks.check_bradley_terry_prob, lambda w, l: w - l, "not a probability")
    assert_rejects(checks.check_bradley_terry_prob, lambda w, l: torch.sigmoid(w), "both rewards")


def test_bt_loss():
    assert_accepts(checks.check_bt_loss, bradley_terry_loss)
    assert_accepts(checks.check_bt_loss, lambda w, l: -F.logsigmoid(w - l))
    assert_accepts(checks.check_bt_loss, lambda w, l: F.softplus(l - w))
    assert_rejects(checks.check_bt_loss, lambda w, l: F.logsigmoid(w - l), "wrong sign")
    assert_rejects(checks.check_bt_loss, lambda w, l: -F.logsigmoid(l - w), "swapped")
    assert_rejects(checks.check_bt_loss, lambda w, l: -torch.log(torch.sigmoid(w - l)), "logsigmoid", "float32")
    assert_rejects(checks.check_bt_loss, lambda w, l: -F.logsigmoid(w - l).mean(), "mean")
    assert_rejects(checks.check_bt_loss, lambda w, l: -F.logsigmoid(w - l).sum(), "sum")
    assert_rejects(checks.check_bt_loss, lambda w, l: 1 - torch.sigmoid(w - l), "negative log-likelihood")


# ---------------------------------------------------------------- 02


def test_kl_monte_carlo_names_each_slip():
    def right(p, q, y):
        x = torch.log(p[y] / q[y])
        return x.mean(), x.std() / len(y) ** 0.5

    assert_accepts(checks.check_kl_monte_carlo, right)
    assert_rejects(checks.check_kl_monte_carlo, lambda p, q, y: right(p, q, y)[0], "two numbers")
    assert_rejects(checks.check_kl_monte_carlo, lambda p, q, y: (-right(p, q, y)[0], right(p, q, y)[1]), "sign")
    assert_rejects(checks.check_kl_monte_carlo,
                   lambda p, q, y: ((p * torch.log(p / q)).sum(), right(p, q, y)[1]), "exact KL")
    assert_rejects(checks.check_kl_monte_carlo,
                   lambda p, q, y: (right(p, q, y)[0], torch.log(p[y] / q[y]).std()), "sqrt(N)")
    assert_rejects(checks.check_kl_monte_carlo,
                   lambda p, q, y: (right(p, q, y)[0], torch.log(p[y] / q[y]).std(unbiased=False) / len(y) ** 0.5),
                   "N - 1")


def test_win_gap_is_the_gradient_and_each_slip_is_named():
    assert_accepts(checks.check_win_gap, toy.bt_win_gap)

    def grad_by_autograd(s, c, r):
        s = s.clone().requires_grad_(True)
        return torch.autograd.grad(F.logsigmoid(s[c] - s[r]).sum(), s)[0]

    assert_accepts(checks.check_win_gap, grad_by_autograd)
    assert_rejects(checks.check_win_gap, lambda s, c, r: -toy.bt_win_gap(s, c, r), "sign is flipped")
    assert_rejects(checks.check_win_gap, lambda s, c, r: toy.bt_win_gap(s, c, r) / len(c), "divided")
    assert_rejects(checks.check_win_gap, lambda s, c, r: torch.bincount(c, minlength=s.shape[0]).double(),
                   "only the observed wins")

    def winners_only(s, c, r):
        p = torch.sigmoid(s[c] - s[r])
        return torch.bincount(c, minlength=s.shape[0]).double() - torch.zeros_like(s).index_add_(0, c, p)

    assert_rejects(checks.check_win_gap, winners_only, "lost")

    def loser_expected_p(s, c, r):  # the loser's expected wins taken as P instead of 1 - P
        p = torch.sigmoid(s[c] - s[r])
        return torch.bincount(c, minlength=s.shape[0]).double() - torch.zeros_like(s).index_add_(0, c, p).index_add_(0, r, p)

    assert_rejects(checks.check_win_gap, loser_expected_p, "1 - P")


def test_win_gap_vanishes_at_the_maximum_likelihood_scores():
    r = toy.make_toy().r
    chosen, rejected = toy.sample_preferences(r, 5_000, seed=2)
    fitted = toy.fit_bt_rewards(chosen, rejected, len(r))
    assert toy.bt_win_gap(fitted, chosen, rejected).abs().max() < 1e-3
    assert toy.bt_win_gap(r, chosen, rejected).abs().max() > 1.0  # the true rewards are not the sample's MLE


def test_bayes_accuracy_is_the_ceiling():
    assert_accepts(checks.check_bayes_accuracy, toy.bayes_accuracy)
    assert_rejects(checks.check_bayes_accuracy, lambda r, c, l: torch.sigmoid(r[c] - r[l]).mean(), "recorded")
    assert_rejects(checks.check_bayes_accuracy, lambda r, c, l: (r[c] > r[l]).double().mean(), "one draw")
    assert_rejects(checks.check_bayes_accuracy, lambda r, c, l: torch.tensor(1.0), "noisy labels")
    # by simulation: the true rewards' accuracy on fresh labels approaches the ceiling, never above it
    r = toy.make_toy().r
    chosen, rejected = toy.sample_preferences(r, 50_000, seed=5)
    observed = (r[chosen] > r[rejected]).double().mean()
    assert abs(observed - toy.bayes_accuracy(r, chosen, rejected)) < 0.01


def test_optimal_policy():
    assert_accepts(checks.check_optimal_policy, toy.optimal_policy)
    assert_accepts(checks.check_optimal_policy, lambda p, r, b: torch.softmax(torch.log(p) + r / b, -1))
    naive = lambda p, r, b: p * torch.exp(r / b) / (p * torch.exp(r / b)).sum()
    assert_rejects(checks.check_optimal_policy, naive, "overflow")
    assert_rejects(checks.check_optimal_policy, lambda p, r, b: toy.optimal_policy(p, -r, b), "wrong sign")
    assert_rejects(checks.check_optimal_policy, lambda p, r, b: toy.optimal_policy(p, r, 1.0), "beta is missing")
    assert_rejects(checks.check_optimal_policy, lambda p, r, b: toy.optimal_policy(p, r * b, 1.0), "r / beta")
    assert_rejects(checks.check_optimal_policy, lambda p, r, b: p * torch.exp(r / b), "normalised")
    assert_rejects(checks.check_optimal_policy, lambda p, r, b: torch.softmax(r / b, -1), "pi_ref is missing")
    assert_rejects(checks.check_optimal_policy, lambda p, r, b: torch.softmax(p + r / b, -1), "its log")


def test_rlhf_objective():
    assert_accepts(checks.check_rlhf_objective, toy.rlhf_objective)
    xlogy = torch.special.xlogy
    mine = lambda pi, ref, r, b: (pi * r).sum(-1) - b * (xlogy(pi, pi) - xlogy(pi, ref)).sum(-1)  # noqa: E731
    assert_accepts(checks.check_rlhf_objective, mine)
    # literal 0 log 0 on the policy with zero-mass responses
    assert_rejects(checks.check_rlhf_objective, lambda pi, ref, r, b: (pi * r).sum(-1) - b * (pi * torch.log(pi / ref)).sum(-1),
                   "0 * log 0")
    assert_rejects(checks.check_rlhf_objective, lambda pi, ref, r, b: (pi * r).sum() + b * (pi * torch.log(pi / ref)).sum(), "sign")
    assert_rejects(checks.check_rlhf_objective, lambda pi, ref, r, b: (pi * r).sum() - (pi * torch.log(pi / ref)).sum(), "beta is missing")
    assert_rejects(checks.check_rlhf_objective, lambda pi, ref, r, b: (pi * r).sum() - (pi * torch.log(pi / ref)).sum() / b, "divided")
    assert_rejects(checks.check_rlhf_objective, lambda pi, ref, r, b: (pi * r).sum() - b * (ref * torch.log(ref / pi)).sum(), "reversed")
    assert_rejects(checks.check_rlhf_objective, lambda pi, ref, r, b: (pi * r).mean() - b * (pi * torch.log(pi / ref)).sum(), "not a mean")
    assert_rejects(checks.check_rlhf_objective, lambda pi, ref, r, b: (pi * r).sum() - b * (pi * torch.log(pi / ref)).mean(), "sum over responses")
    # right on one policy, wrong on a batch: the (N, K) call the notebook makes later
    assert_rejects(checks.check_rlhf_objective, lambda pi, ref, r, b: (pi * r).sum() - b * (pi * torch.log(pi / ref)).sum(),
                   "one objective per row")
    assert_rejects(checks.check_rlhf_objective, lambda pi, ref, r, b: r.mean() - b * (pi * torch.log(pi / ref)).sum(), "weight each reward")
    assert_rejects(checks.check_rlhf_objective, lambda pi, ref, r, b: (pi * r).sum(-1) - b * torch.log(pi / ref).sum(-1),
                   "summed unweighted")


# ---------------------------------------------------------------- 03


def test_reward_from_policy():
    assert_accepts(checks.check_reward_from_policy, toy.reward_from_policy)
    assert_accepts(checks.check_reward_from_policy, lambda s, ref, b, lz: b * torch.log(s / ref) + b * lz)
    assert_rejects(checks.check_reward_from_policy, lambda s, ref, b, lz: b * torch.log(s / ref), "partition term is missing")
    assert_rejects(checks.check_reward_from_policy, lambda s, ref, b, lz: b * torch.log(s / ref) + lz, "multiplied by beta")
    assert_rejects(checks.check_reward_from_policy, lambda s, ref, b, lz: torch.log(s / ref) + lz, "beta is missing")
    assert_rejects(checks.check_reward_from_policy, lambda s, ref, b, lz: b * torch.log(ref / s) + b * lz, "upside down")
    assert_rejects(checks.check_reward_from_policy, lambda s, ref, b, lz: b * torch.log(s / ref) - b * lz, "sign")


def test_dpo_loss():
    assert_accepts(checks.check_dpo_loss, dpo_loss)  # returns a tuple: the checker takes the losses
    assert_accepts(checks.check_dpo_loss, lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - pr) - (rc - rr))))
    h = lambda pc, pr, rc, rr: (pc - pr) - (rc - rr)
    assert_rejects(checks.check_dpo_loss, lambda pc, pr, rc, rr, b: -F.logsigmoid(-b * h(pc, pr, rc, rr)), "margin has the wrong sign")
    assert_rejects(checks.check_dpo_loss, lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((rc - rr) - (pc - pr))), "policy vs reference")
    assert_rejects(checks.check_dpo_loss, lambda pc, pr, rc, rr, b: F.logsigmoid(b * h(pc, pr, rc, rr)), "wrong sign")
    assert_rejects(checks.check_dpo_loss, lambda pc, pr, rc, rr, b: -F.logsigmoid(h(pc, pr, rc, rr)), "beta is missing")
    assert_rejects(checks.check_dpo_loss, lambda pc, pr, rc, rr, b: -F.logsigmoid(h(pc, pr, rc, rr) / b), "divided")
    assert_rejects(checks.check_dpo_loss, lambda pc, pr, rc, rr, b: -torch.log(torch.sigmoid(b * h(pc, pr, rc, rr))), "F.logsigmoid")
    assert_rejects(checks.check_dpo_loss, lambda pc, pr, rc, rr, b: -F.logsigmoid(b * h(pc, pr, rc, rr)).mean(), "one number")
    assert_rejects(checks.check_dpo_loss, lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - pr)), "reference log-probs are missing")
    assert_rejects(checks.check_dpo_loss, lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - pr) + (rc - rr))),
                   "reference's log-ratio is added")


def test_dpo_loss_checker_demands_ln2_at_reference():
    # right everywhere except at pi = pi_ref: an answer with a constant offset is caught
    def offset(pc, pr, rc, rr, b):
        loss = -F.logsigmoid(b * ((pc - pr) - (rc - rr)))
        return loss + (loss - math.log(2)).abs().lt(1e-6) * 0.1

    assert_rejects(checks.check_dpo_loss, offset)


# ---------------------------------------------------------------- the notebooks' own solutions

import re  # noqa: E402
from pathlib import Path  # noqa: E402

SRC = Path(__file__).resolve().parent.parent / "notebooks" / "src"
THEORY_SOURCES = sorted(SRC.glob("0[0-3]_*.py"))


def exercise_cells():
    """(source, cell) for every code cell of notebooks 00-03 that defines a function and checks it."""
    out = []
    for src in THEORY_SOURCES:
        for cell in re.split(r"^# %%.*$", src.read_text(encoding="utf-8"), flags=re.M):
            if re.search(r"^def \w+\(", cell, re.M) and re.search(r"^checks\.check_\w+\(\w+\)", cell, re.M):
                out.append((src.name, cell))
    return out


def run_exercise_cell(cell):
    namespace = {"torch": torch, "F": F, "math": math, "checks": checks}
    body = "\n".join(ln for ln in cell.splitlines() if not ln.startswith("from helpers import checks"))
    call = re.findall(r"^(checks\.check_\w+\(\w+\))\s*$", body, re.M)[-1]
    exec(compile(body.replace(call, ""), "<cell>", "exec"), namespace)
    return eval(call, namespace)


def test_each_theory_notebook_has_two_exercises_with_stub_and_solution():
    cells = exercise_cells()
    for src in THEORY_SOURCES:
        mine = [c for name, c in cells if name == src.name]
        stubs = [c for c in mine if "raise NotImplementedError" in c]
        solutions = [c for c in mine if "raise NotImplementedError" not in c]
        assert len(stubs) >= 2 and len(solutions) >= 2, f"{src.name}: {len(stubs)} stubs, {len(solutions)} solutions"


@pytest.mark.parametrize("name,cell", exercise_cells(), ids=lambda v: v if isinstance(v, str) and v.endswith(".py") else "")
def test_notebook_exercise_cells_stub_fails_and_solution_passes(name, cell):
    verdict = run_exercise_cell(cell)
    if "raise NotImplementedError" in cell:
        assert not verdict and "not implemented" in verdict.message
    else:
        assert verdict, f"{name}: the worked solution fails its checker: {verdict.message}"


def test_dpo_gradient_accepts_the_derivation_and_names_each_slip():
    def make(sign=-1.0, scale=True, weight=True, flip=False):
        def dpo_gradient(theta, pi_ref, w, l, beta):
            h = (theta[w] - theta[l]) - (torch.log(pi_ref[w]) - torch.log(pi_ref[l]))
            e = torch.zeros_like(theta)
            e[w], e[l] = 1.0, -1.0
            g = -(beta if scale else 1.0) * (torch.sigmoid(sign * beta * h) if weight else 1.0) * e
            return -g if flip else g
        return dpo_gradient

    assert_accepts(checks.check_dpo_gradient, make())
    assert_rejects(checks.check_dpo_gradient, make(flip=True), "wrong sign")
    assert_rejects(checks.check_dpo_gradient, make(scale=False), "beta is missing")
    assert_rejects(checks.check_dpo_gradient, make(sign=1.0), "sigma(beta h) where sigma(-beta h)")
    assert_rejects(checks.check_dpo_gradient, make(weight=False), "weight sigma(-beta h) is missing")

    def without_ref(theta, pi_ref, w, l, beta):  # h taken as theta_w - theta_l: pi_ref dropped
        return make()(theta, torch.ones_like(pi_ref), w, l, beta)

    assert_rejects(checks.check_dpo_gradient, without_ref, "pi_ref is missing from h")

    def with_normaliser_wrong(theta, pi_ref, w, l, beta):  # forgets that the softmax Jacobian cancels: e_w - pi
        return make()(theta, pi_ref, w, l, beta) + 0.1 * torch.softmax(theta, -1)

    assert_rejects(checks.check_dpo_gradient, with_normaliser_wrong, "wrong value")


def test_beta_limits_needs_the_tie_case():
    def restricted(p, r):
        best = torch.where(r == r.max(), p, torch.zeros_like(p))
        return best / best.sum()

    assert_accepts(checks.check_beta_limits, lambda p, r: (restricted(p, r), p.clone()))
    assert_rejects(checks.check_beta_limits, lambda p, r: (p, restricted(p, r)), "swapped")
    assert_rejects(checks.check_beta_limits, lambda p, r: (p, p), "does not stay at pi_ref")
    assert_rejects(checks.check_beta_limits, lambda p, r: (F.one_hot(r.argmax(), len(r)).double(), p), "not one response")
    assert_rejects(checks.check_beta_limits, lambda p, r: ((r == r.max()).double() / (r == r.max()).sum(), p),
                   "restricted to the tied responses")
    assert_rejects(checks.check_beta_limits, lambda p, r: p, "return two distributions")



def test_count_pairs_checks_the_counting_argument():
    from collections import Counter

    def right(rewards):
        k = len(rewards)
        return k * (k - 1) // 2 - sum(n * (n - 1) // 2 for n in Counter(rewards).values())

    def brute(rewards):
        return sum(1 for i in range(len(rewards)) for j in range(i + 1, len(rewards)) if rewards[i] != rewards[j])

    assert_accepts(checks.check_count_pairs, right)
    assert_accepts(checks.check_count_pairs, brute)  # enumerating is right too, only slower
    assert_rejects(checks.check_count_pairs, lambda r: len(r) * (len(r) - 1) // 2, "tied samples")
    assert_rejects(checks.check_count_pairs,
                   lambda r: len(r) * (len(r) - 1) // 2 - sum(n - 1 for n in Counter(r).values()), "not n - 1")
    assert_rejects(checks.check_count_pairs,
                   lambda r: len(r) * (len(r) - 1) - sum(n * (n - 1) for n in Counter(r).values()), "twice")
    assert_rejects(checks.check_count_pairs, lambda r: "many", "an int")


# --- notebook 09 ---

def _snis_right(r, beta):
    w = torch.softmax(r / beta, -1)
    reward = (w * r).sum(-1)
    return reward, reward / beta - (torch.logsumexp(r / beta, -1) - math.log(r.shape[1])), 1 / (w ** 2).sum(-1)


def test_snis_optimum_accepts_the_estimate_and_names_each_slip():
    assert_accepts(checks.check_snis_optimum, _snis_right)
    assert_rejects(checks.check_snis_optimum, stub, "not implemented")

    def unnormalised(r, beta):
        _, kl, ess = _snis_right(r, beta)
        return (torch.exp(r / beta) * r).mean(-1), kl, ess

    def logsumexp_z(r, beta):
        reward, _, ess = _snis_right(r, beta)
        return reward, reward / beta - torch.logsumexp(r / beta, -1), ess

    def ess_as_sum(r, beta):
        reward, kl, _ = _snis_right(r, beta)
        return reward, kl, torch.softmax(r / beta, -1).sum(-1)

    def kl_beta_times_reward(r, beta):
        reward, _, ess = _snis_right(r, beta)
        return reward, beta * reward, ess

    assert_rejects(checks.check_snis_optimum, unnormalised, "not normalised")
    assert_rejects(checks.check_snis_optimum, logsumexp_z, "mean", "log M")
    assert_rejects(checks.check_snis_optimum, ess_as_sum, "1 / sum_i w_i^2")
    assert_rejects(checks.check_snis_optimum, kl_beta_times_reward, "not beta * E[r]")
    assert_rejects(checks.check_snis_optimum, lambda r, beta: _snis_right(r, beta)[0], "three")
    # the helpers' estimator is the reference the course uses: it agrees
    from helpers.optimum import optimal_point

    def via_helpers(r, beta):
        p = optimal_point(r.numpy(), beta)
        return torch.tensor(p["reward"]), torch.tensor(p["kl"]), torch.tensor(p["ess"])

    assert_accepts(checks.check_snis_optimum, via_helpers)


def test_optimal_margin_needs_the_minimiser_and_the_certain_case():
    right = lambda gap, beta, tau: math.inf if tau == 0 else gap / (tau * beta)  # noqa: E731
    assert_accepts(checks.check_optimal_margin, right)
    assert_rejects(checks.check_optimal_margin, lambda g, b, t: g / b if t else math.inf, "tau is missing")
    assert_rejects(checks.check_optimal_margin, lambda g, b, t: g * b / t if t else math.inf, "beta divides")
    assert_rejects(checks.check_optimal_margin,
                   lambda g, b, t: (1 / (1 + math.exp(-g / t))) / b if t else math.inf, "logit(p)")
    assert_rejects(checks.check_optimal_margin, lambda g, b, t: g / (t * b) if t else 1e9, "no finite h")
    assert_rejects(checks.check_optimal_margin, lambda g, b, t: g / (t * b), "tau = 0")
    # and the claim itself: at that h the soft-label loss is stationary
    from helpers.losses import soft_dpo_loss

    gap, beta, tau = 0.7, 0.3, 1.5
    h = torch.tensor([right(gap, beta, tau)], dtype=torch.float64, requires_grad=True)
    zero = torch.zeros(1, dtype=torch.float64)
    p = torch.sigmoid(torch.tensor([gap / tau], dtype=torch.float64))
    (grad,) = torch.autograd.grad(soft_dpo_loss(h, zero, zero, zero, beta, p)[0].sum(), h)
    assert abs(grad.item()) < 1e-12
