"""The toy world against independent computations: naive loops, closed forms, finite differences."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import toy
from helpers.losses import dpo_loss

WORLD = toy.make_toy()


def naive_kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def test_world_is_a_distribution_with_distinct_rewards():
    assert len(WORLD.responses) == WORLD.pi_ref.numel() == WORLD.r.numel()
    assert WORLD.pi_ref.sum().item() == pytest.approx(1.0)
    assert (WORLD.pi_ref > 0).all()
    assert len(set(WORLD.r.tolist())) == len(WORLD.responses)


def test_kl_and_expected_reward_match_naive_loops():
    p = [0.5, 0.3, 0.2, 0.0]
    q = [0.1, 0.2, 0.3, 0.4]
    assert toy.kl_divergence(p, q).item() == pytest.approx(naive_kl(p, q), abs=1e-12)
    assert toy.kl_divergence(q, q).item() == pytest.approx(0.0, abs=1e-15)
    assert toy.expected_reward(p, [1, 2, 3, 4]).item() == pytest.approx(0.5 + 0.6 + 0.6)


def test_optimal_policy_matches_the_formula_term_by_term():
    for beta in (0.3, 1.0, 7.0):
        unnorm = [p * math.exp(r / beta) for p, r in zip(WORLD.pi_ref.tolist(), WORLD.r.tolist())]
        z = sum(unnorm)
        expected = torch.tensor([u / z for u in unnorm], dtype=torch.float64)
        assert torch.allclose(toy.optimal_policy(WORLD.pi_ref, WORLD.r, beta), expected, atol=1e-12)
        assert toy.log_partition(WORLD.pi_ref, WORLD.r, beta).item() == pytest.approx(math.log(z), abs=1e-12)


def test_optimal_policy_is_stable_at_tiny_beta_and_goes_to_argmax_and_ref():
    pi = toy.optimal_policy(WORLD.pi_ref, WORLD.r, 1e-4)
    assert torch.isfinite(pi).all()
    assert pi.argmax().item() == WORLD.r.argmax().item() and pi.max().item() == pytest.approx(1.0)
    assert torch.allclose(toy.optimal_policy(WORLD.pi_ref, WORLD.r, 1e6), WORLD.pi_ref, atol=1e-5)


def test_objective_identity_and_optimality_over_random_policies():
    beta = 0.7
    gen = torch.Generator().manual_seed(0)
    pis = torch.softmax(3 * torch.randn(500, 6, generator=gen, dtype=torch.float64), -1)
    pi_star = toy.optimal_policy(WORLD.pi_ref, WORLD.r, beta)
    log_z = toy.log_partition(WORLD.pi_ref, WORLD.r, beta)
    j = toy.rlhf_objective(pis, WORLD.pi_ref, WORLD.r, beta)
    assert torch.allclose(j, beta * log_z - beta * toy.kl_divergence(pis, pi_star), atol=1e-12)
    assert (j <= toy.rlhf_objective(pi_star, WORLD.pi_ref, WORLD.r, beta) + 1e-12).all()
    assert toy.rlhf_objective(pi_star, WORLD.pi_ref, WORLD.r, beta).item() == pytest.approx(beta * log_z.item())


def test_objective_gradient_matches_finite_differences():
    beta = 0.5
    theta = torch.tensor([0.3, -0.2, 0.1, 0.5, -1.0, 0.0], dtype=torch.float64, requires_grad=True)
    j = toy.rlhf_objective(torch.softmax(theta, -1), WORLD.pi_ref, WORLD.r, beta)
    (grad,) = torch.autograd.grad(j, theta)
    eps = 1e-6
    for k in range(6):
        d = torch.zeros(6, dtype=torch.float64)
        d[k] = eps
        f = lambda t: toy.rlhf_objective(torch.softmax(t, -1), WORLD.pi_ref, WORLD.r, beta).item()
        fd = (f(theta.detach() + d) - f(theta.detach() - d)) / (2 * eps)
        assert grad[k].item() == pytest.approx(fd, abs=1e-7)


@pytest.mark.parametrize("beta", [0.5, 1.0, 4.0])
def test_gradient_ascent_reaches_the_closed_form(beta):
    pi, history = toy.ascend_objective(WORLD.pi_ref, WORLD.r, beta, steps=2000)
    assert (pi - toy.optimal_policy(WORLD.pi_ref, WORLD.r, beta)).abs().max().item() < 1e-4
    assert history.shape == (2001,)
    assert (history[1:] - history[:-1] >= -1e-12).all()  # ascent never goes down
    assert history[0].item() == pytest.approx(toy.expected_reward(WORLD.pi_ref, WORLD.r).item())


def test_reward_from_policy_inverts_optimal_policy_for_a_batch_of_prompts():
    gen = torch.Generator().manual_seed(3)
    pi_ref = torch.softmax(torch.randn(3, 5, generator=gen, dtype=torch.float64), -1)
    r = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    pi_star = toy.optimal_policy(pi_ref, r, 0.4)
    log_z = toy.log_partition(pi_ref, r, 0.4)  # (3,)
    assert torch.allclose(toy.reward_from_policy(pi_star, pi_ref, 0.4, log_z), r, atol=1e-12)


def test_prompt_only_shift_changes_nothing_but_response_shift_does():
    r = WORLD.r
    assert torch.allclose(toy.preference_matrix(r + 5.0), toy.preference_matrix(r), atol=1e-15)
    assert torch.allclose(toy.optimal_policy(WORLD.pi_ref, r + 5.0, 0.3), toy.optimal_policy(WORLD.pi_ref, r, 0.3))
    bump = torch.zeros_like(r)
    bump[2] = 1.0
    assert not torch.allclose(toy.preference_matrix(r + bump), toy.preference_matrix(r))


def test_bradley_terry_prob_and_matrix():
    assert toy.bradley_terry_prob(1.0, 0.0).item() == pytest.approx(math.e / (math.e + 1))
    p = toy.preference_matrix(WORLD.r)
    assert torch.allclose(p + p.T, torch.ones_like(p))
    for i, j in itertools.product(range(6), repeat=2):
        ri, rj = WORLD.r[i].item(), WORLD.r[j].item()
        assert p[i, j].item() == pytest.approx(math.exp(ri) / (math.exp(ri) + math.exp(rj)))


def test_sample_preferences_follows_bradley_terry_and_is_seeded():
    c, r = toy.sample_preferences(WORLD.r, 60_000, seed=1)
    assert (c != r).all()
    c2, r2 = toy.sample_preferences(WORLD.r, 60_000, seed=1)
    assert torch.equal(c, c2) and torch.equal(r, r2)
    wins = toy.count_wins(c, r, 6)
    # the pair (good, bad): empirical win rate against sigmoid(1 - (-1))
    rate = wins[1, 4] / (wins[1, 4] + wins[4, 1])
    assert rate.item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item(), abs=0.03)
    # uniform pair sampling: every unordered pair about equally often (1/15 each)
    counts = wins + wins.T
    off = counts[~torch.eye(6, dtype=torch.bool)] / 60_000
    assert off.min().item() > 1 / 15 - 0.01 and off.max().item() < 1 / 15 + 0.01


def test_sample_preferences_from_pi_ref():
    c, r = toy.sample_preferences(WORLD.r, 40_000, seed=0, pi_sample=WORLD.pi_ref)
    counts = torch.bincount(torch.cat([c, r]), minlength=6).double()
    # 'okay' (pi_ref 0.30) appears far more often than 'awful' (0.05)
    assert counts[2] > 3 * counts[5]


def test_deterministic_preferences_are_all_pairs_ordered_by_reward():
    c, r = toy.deterministic_preferences(WORLD.r)
    assert c.numel() == 15
    assert (WORLD.r[c] > WORLD.r[r]).all()
    assert {(min(a, b), max(a, b)) for a, b in zip(c.tolist(), r.tolist())} == set(itertools.combinations(range(6), 2))


def test_fit_bt_rewards_recovers_differences_and_keeps_the_initial_mean():
    c, r = toy.sample_preferences(WORLD.r, 200_000, seed=0)
    s = toy.fit_bt_rewards(c, r, 6)
    assert s.mean().item() == pytest.approx(0.0, abs=1e-9)
    assert torch.allclose(s - s.mean(), WORLD.r - WORLD.r.mean(), atol=0.05)
    s7 = toy.fit_bt_rewards(c, r, 6, init=torch.full((6,), 7.0))
    assert s7.mean().item() == pytest.approx(7.0, abs=1e-9)
    assert torch.allclose(s7 - 7.0, s, atol=1e-6)


def test_fit_toy_policy_with_exact_preference_frequencies_hits_pi_star():
    # counts proportional to the true BT probabilities: the MLE is exactly the true reward, so DPO's
    # optimum is exactly pi* (no sampling noise at all)
    beta = 0.8
    p = toy.preference_matrix(WORLD.r)
    chosen, rejected = [], []
    for i, j in itertools.permutations(range(6), 2):
        n = round(10_000 * p[i, j].item())
        chosen += [i] * n
        rejected += [j] * n
    pi, _ = toy.fit_toy_policy(WORLD.pi_ref, torch.tensor(chosen), torch.tensor(rejected), beta)
    assert (pi - toy.optimal_policy(WORLD.pi_ref, WORLD.r, beta)).abs().max().item() < 1e-3


def test_fit_toy_policy_loss_is_the_mean_dpo_loss_over_pairs():
    # the grouped (count-weighted) loss equals the plain mean over pairs: compare gradients at pi_ref
    c, r = toy.sample_preferences(WORLD.r, 500, seed=2)
    theta = torch.log(WORLD.pi_ref).clone().requires_grad_(True)
    logps = torch.log_softmax(theta, -1)
    ref = torch.log(WORLD.pi_ref)
    plain = dpo_loss(logps[c], logps[r], ref[c], ref[r], beta=0.5)[0].mean()
    (g_plain,) = torch.autograd.grad(plain, theta)
    # one Adam step of size lr moves theta by ~lr * sign(grad): compare directions
    _, traj = toy.fit_toy_policy(WORLD.pi_ref, c, r, 0.5, optimizer="adam", steps=1, lr=1e-3)
    moved = torch.log(traj[1]) - torch.log(traj[0])
    moved = moved - moved.mean()
    expected = -1e-3 * torch.sign(g_plain)
    assert torch.allclose(moved, expected - expected.mean(), atol=1e-6)


def test_deterministic_preferences_dpo_diverges_cdpo_and_ipo_reach_closed_forms():
    pi_ref = torch.tensor([0.5, 0.5], dtype=torch.float64)
    c, r = torch.tensor([0]), torch.tensor([1])
    beta, eps = 0.5, 0.1

    def margin(pi):
        return (torch.log(pi[..., 0]) - torch.log(pi[..., 1])).numpy()

    _, traj = toy.fit_toy_policy(pi_ref, c, r, beta, optimizer="adam", steps=2000, lr=0.05)
    h = margin(traj)
    assert h[2000] > h[1000] > h[300] > 8  # no finite optimum: keeps growing
    pi_c, _ = toy.fit_toy_policy(pi_ref, c, r, beta, label_smoothing=eps)
    assert beta * margin(pi_c) == pytest.approx(math.log((1 - eps) / eps), abs=1e-6)
    pi_i, _ = toy.fit_toy_policy(pi_ref, c, r, beta, loss="ipo")
    assert margin(pi_i) == pytest.approx(1 / (2 * beta), abs=1e-6)


def test_dpo_gradient_weight_matches_autograd():
    theta = torch.tensor([0.2, -0.5, 1.0], dtype=torch.float64, requires_grad=True)
    ref = torch.log(torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64))
    beta = 0.7
    logps = torch.log_softmax(theta, -1)
    loss = dpo_loss(logps[0:1], logps[2:3], ref[0:1], ref[2:3], beta)[0].sum()
    (g,) = torch.autograd.grad(loss, theta)
    w = toy.dpo_gradient_weight(logps[0].detach(), logps[2].detach(), ref[0], ref[2], beta)
    expected = -beta * w * torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    assert torch.allclose(g, expected, atol=1e-12)
    assert 0 < w.item() < 1


def test_single_thread_restores_the_thread_count():
    n = torch.get_num_threads()
    with toy.single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == n


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        toy.fit_toy_policy(WORLD.pi_ref, torch.tensor([0]), torch.tensor([1]), 1.0, loss="nope")
    with pytest.raises(ValueError):
        toy.fit_toy_policy(WORLD.pi_ref, torch.tensor([0]), torch.tensor([1]), 1.0, optimizer="sgd")


def test_log_softmax_matches_torch():
    z = torch.tensor([[1000.0, 1001.0], [-3.0, 2.0]])
    assert torch.allclose(toy.log_softmax(z), F.log_softmax(z.double(), -1))
