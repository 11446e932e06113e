"""The pi* frontier estimate (helpers.optimum) against the exact pi* of the toy world (notebooks
02-03): self-normalised importance sampling from pi_ref samples converges to the closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import toy
from helpers.optimum import fraction_of_optimum, optimal_point, optimum_frontier, optimum_reward_at


def exact(beta: float):
    tw = toy.make_toy()
    pi_star = toy.optimal_policy(tw.pi_ref, tw.r, beta)
    return tw, toy.expected_reward(pi_star, tw.r).item(), toy.kl_divergence(pi_star, tw.pi_ref).item()


def toy_rewards(n_prompts: int, m: int, seed: int) -> np.ndarray:
    """(P, M) rewards of pi_ref samples of the toy (every 'prompt' is the toy's one prompt)."""
    tw = toy.make_toy()
    g = torch.Generator().manual_seed(seed)
    idx = torch.multinomial(tw.pi_ref.expand(n_prompts, -1), m, replacement=True, generator=g)  # (P, M)
    return tw.r[idx].double().numpy()


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_estimate_converges_to_the_exact_optimum_as_m_grows(beta):
    _, reward_star, kl_star = exact(beta)
    errors = []
    for m in (4, 32, 256, 2048):
        p = optimal_point(toy_rewards(200, m, seed=m), beta)
        errors.append((abs(p["reward"].mean() - reward_star), abs(p["kl"].mean() - kl_star)))
    # the error shrinks with M and is small at M = 2048 (SNIS bias ~ 1/M, noise ~ 1/sqrt(P M))
    assert errors[-1][0] < 0.01 and errors[-1][1] < 0.01, errors
    assert errors[-1][0] < errors[0][0] and errors[-1][1] < errors[0][1], errors


def test_kl_formula_matches_a_direct_sum_on_one_prompt():
    """KL(pi* || pi_ref) = E*[r]/beta - log Z, checked against sum_y pi*(y) log(pi*(y)/pi_ref(y))
    with pi* and pi_ref the empirical distributions of the M samples (exact for that discrete set)."""
    rng = np.random.default_rng(0)
    r = rng.normal(size=(1, 50))
    beta = 0.3
    p = optimal_point(r, beta)
    w = np.exp(r[0] / beta) / np.exp(r[0] / beta).sum()
    direct = float((w * np.log(w / (1 / 50))).sum())
    assert p["kl"][0] == pytest.approx(direct, rel=1e-10)
    assert p["reward"][0] == pytest.approx(float((w * r[0]).sum()), rel=1e-12)
    assert 1 <= p["ess"][0] <= 50


def test_frontier_shape_limits_and_reliability():
    r = toy_rewards(100, 64, seed=1)
    front = optimum_frontier(r, [0.05, 0.2, 1.0, 5.0], min_ess=8)
    assert front[0]["beta"] == float("inf") and front[0]["kl_mean"] == 0.0
    assert front[0]["reward_mean"] == pytest.approx(r.mean())
    kls = [q["kl_mean"] for q in front]
    rewards = [q["reward_mean"] for q in front]
    assert kls == sorted(kls) and rewards == sorted(rewards)  # more KL buys more reward on the optimum
    by_beta = {q["beta"]: q for q in front}
    assert by_beta[5.0]["reliable"] and not by_beta[0.05]["reliable"]  # weights pile on one sample
    assert by_beta[0.05]["reward_mean"] <= r.max(axis=1).mean() + 1e-12  # at most best-of-M
    assert by_beta[0.05]["kl_mean"] <= np.log(64) + 1e-12  # at most log M


def test_fraction_of_optimum_is_one_on_the_curve_and_zero_at_the_reference():
    front = optimum_frontier(toy_rewards(100, 256, seed=2), [0.5, 1.0, 2.0, 4.0])
    on = next(q for q in front if q["beta"] == 1.0)
    assert fraction_of_optimum(front, on["kl_mean"], on["reward_mean"]) == pytest.approx(1.0)
    assert fraction_of_optimum(front, on["kl_mean"], front[0]["reward_mean"]) == pytest.approx(0.0)
    halfway = 0.5 * (front[0]["reward_mean"] + optimum_reward_at(front, 0.4))
    assert fraction_of_optimum(front, 0.4, halfway) == pytest.approx(0.5)
    assert np.isnan(optimum_reward_at(front, 100.0))  # past the frontier's reach


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="rewards must be"):
        optimal_point(np.zeros(5), 1.0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        optimal_point(np.zeros((2, 4)), 0.0)


def test_reward_at_kl_interpolates_a_methods_curve_and_never_extrapolates():
    from helpers.optimum import reward_at_kl

    sft = {"kl_mean": 0.0, "reward_mean": 0.1, "reward_se": 0.02}
    runs = [{"kl_mean": 4.0, "reward_mean": 0.5, "reward_se": 0.04}, {"kl_mean": 2.0, "reward_mean": 0.3, "reward_se": 0.02}]
    assert reward_at_kl(runs, 3.0) == pytest.approx((0.4, 0.03))
    assert reward_at_kl(runs, 1.0, base=sft) == pytest.approx((0.2, 0.02))
    assert all(np.isnan(reward_at_kl(runs, 1.0)))  # below its first run and no base given
    assert all(np.isnan(reward_at_kl(runs, 5.0, base=sft)))


def test_beyond_the_reach_the_fraction_is_an_upper_bound():
    from helpers.optimum import format_fraction, fraction_of_optimum_bound

    front = optimum_frontier(toy_rewards(100, 64, seed=4), [0.01, 0.5, 1.0, 2.0])
    reach = max((q for q in front if q["reliable"]), key=lambda q: q["kl_mean"])
    base = front[0]["reward_mean"]
    inside, exact = fraction_of_optimum_bound(front, reach["kl_mean"] / 2, base + 0.1)
    assert exact and inside == pytest.approx(fraction_of_optimum(front, reach["kl_mean"] / 2, base + 0.1))
    far = reach["kl_mean"] + 5.0
    bound, exact = fraction_of_optimum_bound(front, far, reach["reward_mean"])
    assert not exact and bound == pytest.approx(1.0)  # as good as the last reliable point: at most 1
    assert format_fraction(front, far, base + 0.5 * (reach["reward_mean"] - base)) == "<=0.50"
    assert format_fraction(front, reach["kl_mean"], reach["reward_mean"]) == "1.00"
    assert fraction_of_optimum_bound(front, far, reach["reward_mean"] + 1.0) == (1.0, False)  # never above 1


def test_the_optimums_length_uses_the_same_weights_as_its_reward():
    r = toy_rewards(20, 32, seed=5)
    lengths = np.arange(r.size, dtype=np.float64).reshape(r.shape) % 7
    front = optimum_frontier(r, [0.5, 1.0], lengths=lengths)
    assert front[0]["length_mean"] == pytest.approx(lengths.mean())
    for q in front[1:]:
        w = np.exp(r / q["beta"])
        w /= w.sum(axis=1, keepdims=True)
        assert q["length_mean"] == pytest.approx(float((w * lengths).sum(axis=1).mean()))
    assert "length_mean" not in optimum_frontier(r, [1.0])[1]
