"""Tests for helpers.rlhf: every piece against an independent computation, then PPO/RLOO end to end."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from helpers import reward_model as rm
from helpers import rlhf
from helpers.evaluate import generate_responses
from helpers.rlhf import (
    AdaptiveKLController,
    RLHFConfig,
    compute_gae,
    kl_estimates,
    kl_penalized_rewards,
    pack_rollout,
    ppo_policy_loss,
    ppo_value_loss,
    response_logprobs,
    rloo_advantages,
    whiten,
)

# --- GAE ---------------------------------------------------------------------------------------

def test_gae_hand_computed():
    # gamma = 1, lam = 0.5 so the numbers are easy to check on paper.
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.5, 1.0, 9.0]])
    values = torch.tensor([[0.5, 1.0, 0.5], [1.0, 2.0, 7.0]])  # row 2's last entry is padding
    mask = torch.tensor([[True, True, True], [True, True, False]])
    adv, ret = compute_gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 1: d2 = 2 - .5 = 1.5; d1 = 0 + .5 - 1 = -.5; d0 = 1 + 1 - .5 = 1.5
    #        A2 = 1.5, A1 = -.5 + .5 * 1.5 = .25, A0 = 1.5 + .5 * .25 = 1.625
    # row 2: d1 = 1 - 2 = -1 (the padded value is not bootstrapped); d0 = .5 + 2 - 1 = 1.5
    #        A1 = -1, A0 = 1.5 - .5 = 1.0
    torch.testing.assert_close(adv, torch.tensor([[1.625, 0.25, 1.5], [1.0, -1.0, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[2.125, 1.25, 2.0], [2.0, 1.0, 0.0]]))


def test_gae_matches_naive_sum_of_deltas():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    lengths = [6, 4, 1]
    mask = torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]
    gamma, lam = 0.9, 0.95
    adv, _ = compute_gae(rewards, values, mask, gamma, lam)
    for b, L in enumerate(lengths):
        v = values[b, :L].tolist() + [0.0]
        deltas = [rewards[b, t].item() + gamma * v[t + 1] - v[t] for t in range(L)]
        for t in range(L):
            expected = sum((gamma * lam) ** l * deltas[t + l] for l in range(L - t))
            assert adv[b, t].item() == pytest.approx(expected, abs=1e-5)
        assert torch.all(adv[b, L:] == 0)


def test_gae_lambda_one_gives_return_minus_value():
    rewards = torch.tensor([[0.1, -0.2, 1.0]])
    values = torch.tensor([[0.3, 0.2, 0.1]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    adv, ret = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[0.9, 0.8, 1.0]]))  # reward-to-go
    torch.testing.assert_close(adv, ret - values)


# --- whitening --------------------------------------------------------------------------------

def test_whiten_by_hand_and_masked():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, -50.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    out = whiten(x, mask)
    # masked entries 1, 2, 3, 4: mean 2.5, unbiased var 5/3
    expected = (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / math.sqrt(5 / 3)
    torch.testing.assert_close(out[mask], expected)
    assert torch.all(out[~mask] == 0)
    assert out[mask].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert out[mask].std().item() == pytest.approx(1.0, abs=1e-5)
    kept = whiten(x, mask, shift_mean=False)
    torch.testing.assert_close(kept[mask], expected + 2.5)


# --- the clipped objective --------------------------------------------------------------------

def _grad_of_clipped(ratio: float, advantage: float) -> float:
    old = torch.zeros(1, 1)
    logp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    loss, _ = ppo_policy_loss(logp, old, torch.tensor([[advantage]]), torch.ones(1, 1, dtype=torch.bool), 0.2)
    loss.backward()
    return logp.grad.item()


@pytest.mark.parametrize("ratio,adv", [(1.5, 1.0), (1.21, 2.0), (0.5, -1.0), (0.79, -3.0)])
def test_clipped_objective_gradient_zero_outside_clip_range(ratio, adv):
    assert _grad_of_clipped(ratio, adv) == 0.0


@pytest.mark.parametrize("ratio,adv", [(1.0, 1.0), (1.1, -2.0), (0.9, 0.5),
                                       # the pessimistic side is not clipped: a ratio that moved the
                                       # wrong way keeps its gradient so it can be pulled back
                                       (0.5, 1.0), (1.5, -1.0)])
def test_clipped_objective_gradient_inside_or_pessimistic(ratio, adv):
    # d/dlogp of -A * ratio = -A * ratio
    assert _grad_of_clipped(ratio, adv) == pytest.approx(-adv * ratio, rel=1e-6)


def test_value_loss_clipped():
    old = torch.tensor([[0.0, 0.0]])
    returns = torch.tensor([[1.0, 1.0]])
    values = torch.tensor([[0.5, 0.1]], requires_grad=True)
    loss = ppo_value_loss(values, old, returns, torch.ones(1, 2, dtype=torch.bool), 0.2)
    # entry 1: unclipped (0.5-1)^2 = .25, clipped (0.2-1)^2 = .64 -> max .64, gradient 0 (clipped branch)
    # entry 2: unclipped (0.1-1)^2 = .81, clipped the same -> .81
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2)
    loss.backward()
    assert values.grad[0, 0].item() == 0.0
    assert values.grad[0, 1].item() == pytest.approx(0.5 * 2 * (0.1 - 1) / 2)


# --- KL estimates and the per-token reward ----------------------------------------------------

def test_kl_estimate_sign_and_value_on_known_distributions():
    p = torch.tensor([0.5, 0.3, 0.2])  # the policy we sample from
    q = torch.tensor([0.2, 0.3, 0.5])  # the reference
    exact = (p * (p / q).log()).sum().item()  # KL(p || q) = 0.5*ln2.5 + 0.2*ln0.4 = 0.2749
    assert exact == pytest.approx(0.5 * math.log(2.5) + 0.2 * math.log(0.4))
    g = torch.Generator().manual_seed(0)
    y = torch.multinomial(p, 200_000, replacement=True, generator=g)
    est = kl_estimates(p.log()[y].unsqueeze(1), q.log()[y].unsqueeze(1))
    assert est["k1"].mean().item() == pytest.approx(exact, abs=0.01)
    assert est["k3"].mean().item() == pytest.approx(exact, abs=0.01)
    assert (est["k3"] >= 0).all()  # k3 never negative
    assert (est["k1"] < 0).any()  # single k1 samples can be (here: the token with p < q)
    # sign convention: log pi - log pi_ref; swapping the roles estimates a different quantity
    swapped = kl_estimates(q.log()[y].unsqueeze(1), p.log()[y].unsqueeze(1))["k1"].mean().item()
    assert swapped == pytest.approx(-exact, abs=0.01)


def test_kl_penalized_rewards_sum_to_score_minus_beta_kl():
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.2, -0.9, -4.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    scores = torch.tensor([2.0, -1.0])
    rewards, kl = kl_penalized_rewards(scores, logps, ref, mask, beta=0.5)
    torch.testing.assert_close(rewards, torch.tensor([[-0.25, 0.5, 2.0], [0.05, -1.1, 0.0]]))
    torch.testing.assert_close(rewards.sum(1), scores - 0.5 * kl.sum(1))


# --- RLOO ---------------------------------------------------------------------------------------

def test_rloo_leave_one_out_baseline_by_hand():
    R = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 1.0, 1.0]])
    adv = rloo_advantages(R)
    # baselines row 1: (2+3+6)/3, (1+3+6)/3, (1+2+6)/3, (1+2+3)/3
    torch.testing.assert_close(adv[0], torch.tensor([1 - 11 / 3, 2 - 10 / 3, 3 - 3.0, 6 - 2.0]))
    torch.testing.assert_close(adv[1], torch.tensor([-2 / 3, -2 / 3, 2 / 3, 2 / 3]))
    # the leave-one-out advantage is k/(k-1) times the centred reward
    torch.testing.assert_close(adv, (R - R.mean(1, keepdim=True)) * 4 / 3)
    with pytest.raises(ValueError):
        rloo_advantages(torch.ones(3, 1))


# --- KL controller ------------------------------------------------------------------------------

def test_adaptive_kl_controller():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    ctl.update(current_kl=12.0, n_steps=100)  # error clipped to +0.2 -> beta * (1 + 0.02)
    assert ctl.value == pytest.approx(0.1 * 1.02)
    ctl.update(current_kl=5.4, n_steps=500)  # error -0.1 -> * (1 - 0.05)
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.95)


# --- the toy: PPO and RLOO reach pi* = pi_ref exp(r / beta) / Z ---------------------------------

PI_REF = torch.tensor([[0.4, 0.3, 0.15, 0.1, 0.05], [0.1, 0.2, 0.3, 0.2, 0.2]])
REWARD = torch.tensor([[0.0, 1.0, -0.5, 2.0, 0.5], [1.0, 0.0, 0.5, -1.0, 0.3]])


def _pi_star(beta):
    unnorm = PI_REF * torch.exp(REWARD / beta)  # written independently of the helpers
    return unnorm / unnorm.sum(-1, keepdim=True)


@pytest.mark.parametrize("beta", [0.5, 2.0])
@pytest.mark.parametrize("algo", ["ppo", "rloo"])
def test_tabular_rl_reaches_pi_star(algo, beta):
    fn = rlhf.tabular_ppo if algo == "ppo" else rlhf.tabular_rloo
    out = fn(PI_REF, REWARD, beta, steps=150 if algo == "ppo" else 300, seed=1)
    star = _pi_star(beta).double()
    assert (PI_REF.double() - star).abs().max() > 0.1  # the test is not vacuous: pi* is far from pi_ref
    assert (out["pi"] - star).abs().max().item() < 0.01
    torch.testing.assert_close(out["pi_star"], star)


# --- a tiny real GPT-2 ----------------------------------------------------------------------------

VOCAB, EOS, PAD = 64, 1, 0


@pytest.fixture
def tiny_models():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=64, n_layer=2, n_head=2, n_embd=32,
                     bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD)
    policy = GPT2LMHeadModel(cfg)
    ref = GPT2LMHeadModel(cfg)
    ref.load_state_dict(policy.state_dict())
    return policy.eval(), ref.eval()  # dropout off: log-probs must be deterministic


def test_sampling_is_pure_and_tempered(tiny_models):
    policy, _ = tiny_models
    with torch.no_grad():  # sharpen the random model's next-token distribution so temperature matters
        policy.transformer.wte.weight.mul_(4.0)
    torch.manual_seed(1)
    prompt = [5, 9, 11]
    n, temperature = 4000, 0.7
    responses, _ = generate_responses(policy, [prompt] * n, max_new_tokens=1, temperature=temperature,
                                    eos_token_id=EOS, pad_token_id=PAD)
    first = torch.tensor([r[0] for r in responses])
    freq = torch.bincount(first, minlength=VOCAB).float() / n
    with torch.no_grad():
        logits = policy(torch.tensor([prompt])).logits[0, -1]
    probs = torch.softmax(logits / temperature, -1)
    tv = lambda p, q: 0.5 * (p - q).abs().sum().item()  # noqa: E731
    # top_k=50 would leave 14 of the 64 tokens unsampled; the tail they carry must show up
    tail = probs.argsort()[:14]
    assert probs[tail].sum() > 0.05 and freq[tail].sum().item() == pytest.approx(probs[tail].sum().item(), abs=0.015)
    assert tv(freq, probs) < 0.07  # measured 0.04: sampling noise of 4000 draws
    # and the samples tell temperatures apart: they are far from the untempered distribution
    assert tv(freq, torch.softmax(logits, -1)) > 0.1  # measured 0.14


def test_response_logprobs_match_naive_prefix_loop(tiny_models):
    policy, _ = tiny_models
    prompts = [[3, 4, 5], [7]]
    responses = [[10, 11, EOS], [12, 13, 14, 15]]
    batch = pack_rollout(prompts, responses, PAD)
    head = rlhf.ValueHead(32)
    with torch.no_grad():
        logps, values = response_logprobs(policy, batch, temperature=0.8, value_head=head)
        for b, (p, r) in enumerate(zip(prompts, responses)):
            for t, tok in enumerate(r):
                logits = policy(torch.tensor([p + r[:t]])).logits[0, -1] / 0.8
                assert logps[b, t].item() == pytest.approx(torch.log_softmax(logits, -1)[tok].item(), abs=1e-5)
    assert batch["resp_mask"].sum(1).tolist() == [3, 4]
    assert logps[0, 3].item() == 0.0  # padding is zero
    assert torch.all(values == 0)  # zero-initialised head


def _score_fn(prompts, responses):
    # reward: fraction of response tokens equal to 7 (a "sentiment word"), minus a bit for length
    return [sum(t == 7 for t in r) / len(r) for r in responses]


@pytest.mark.parametrize("method", ["ppo", "rloo"])
def test_rl_step_on_tiny_gpt2_changes_weights(tiny_models, method):
    policy, ref = tiny_models
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    cfg = RLHFConfig(beta=0.1, lr=1e-3, batch_size=8, mini_batch_size=4, ppo_epochs=2,
                     max_new_tokens=6, rloo_k=2)
    prompts = [[2 + i, 3 + i] for i in range(8)]
    out = rlhf.train_rlhf(method, policy, ref, prompts, _score_fn, cfg, steps=2,
                          eos_token_id=EOS, pad_token_id=PAD, progress=False)
    hist = out["history"]
    assert len(hist) == 2 and all(math.isfinite(h["pg_loss"]) for h in hist)
    assert 0.0 <= hist[0]["eos_rate"] <= 1.0 and 1 <= hist[0]["response_len"] <= 6
    assert hist[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # first rollout: policy == reference
    changed = [k for k, v in policy.state_dict().items() if not torch.equal(v, before[k])]
    assert any("attn" in k for k in changed) and any("wte" in k for k in changed)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, before[k])  # the reference never moves
    assert out["samples"] == (16 if method == "ppo" else 32)
    if method == "ppo":
        assert out["value_head"].linear.weight.abs().sum() > 0  # the value head learned
        assert hist[1]["kl"] != 0.0


def test_normalised_reward_has_mean_zero_std_one_on_reference_texts():
    raw = {"a": 3.0, "bb": 5.0, "ccc": 10.0, "dddd": 2.0}
    fn = lambda texts: [raw[t] for t in texts]  # noqa: E731
    norm = rm.NormalisedReward(fn, list(raw))
    out = torch.tensor(norm(list(raw)), dtype=torch.float64)
    assert out.mean().item() == pytest.approx(0.0, abs=1e-9)
    assert out.std().item() == pytest.approx(1.0, abs=1e-9)
    # an affine map: order and ratios of differences are kept
    assert norm(["ccc"])[0] - norm(["a"])[0] == pytest.approx((10 - 3) / torch.tensor(list(raw.values())).std().item())

