"""Consistent targets: the soft-label, listwise and distillation losses against independent
computations (sampled labels, the pairwise form, closed-form optima on the toy), the annotator, and
the grouped training path on a real tiny GPT-2."""

import math

import numpy as np
import pytest
import torch

from helpers import toy
from helpers.evaluate import score_responses, token_kl
from helpers.implicit import calibration_slope
from helpers.losses import distillation_loss, dpo_loss, listwise_dpo_loss, soft_dpo_loss
from helpers.targets import (
    TARGETS,
    TargetConfig,
    collate_groups,
    group_logps,
    groups_from_samples,
    pair_targets,
    target_losses,
    tokenize_groups,
    train_on_target,
)

D = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


# ------------------------------------------------------------------------------- soft-label DPO


def test_soft_loss_with_certain_labels_is_dpo_and_constant_p_is_cdpo():
    args = [rand(6, seed=s) for s in range(4)]
    ones = torch.ones(6, dtype=D)
    assert torch.allclose(soft_dpo_loss(*args, 0.3, ones)[0], dpo_loss(*args, beta=0.3)[0])
    eps = 0.2
    assert torch.allclose(soft_dpo_loss(*args, 0.3, ones * (1 - eps))[0],
                          dpo_loss(*args, beta=0.3, label_smoothing=eps)[0])


def test_soft_loss_is_the_mean_over_sampled_labels():
    """An annotator who says 'chosen' with probability p: the mean DPO loss over its labels (a swapped
    pair when it says 'rejected') converges to the soft loss."""
    pc, pr, rc, rr = (rand(5, seed=s) * 3 for s in range(4))
    p = torch.tensor([0.05, 0.3, 0.5, 0.8, 1.0], dtype=D)
    n = 200_000
    g = torch.Generator().manual_seed(1)
    says_chosen = torch.rand(n, 5, generator=g, dtype=D) < p
    forward = dpo_loss(pc, pr, rc, rr, beta=0.5)[0]
    swapped = dpo_loss(pr, pc, rr, rc, beta=0.5)[0]
    mc = torch.where(says_chosen, forward, swapped).mean(0)
    assert torch.allclose(mc, soft_dpo_loss(pc, pr, rc, rr, 0.5, p)[0], atol=5e-3)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.73, 0.99])
def test_soft_loss_minimum_is_at_beta_h_equal_logit_p(p):
    beta = 0.4
    h_star = math.log(p / (1 - p)) / beta
    h = torch.tensor([h_star], dtype=D, requires_grad=True)
    zero = torch.zeros(1, dtype=D)
    loss = soft_dpo_loss(h, zero, zero, zero, beta, torch.tensor([p], dtype=D))[0].sum()
    (grad,) = torch.autograd.grad(loss, h)
    assert abs(grad.item()) < 1e-12
    for delta in (-0.5, 0.5):  # a minimum, not a maximum
        other = soft_dpo_loss(h.detach() + delta, zero, zero, zero, beta, torch.tensor([p], dtype=D))[0]
        assert other.item() > loss.item()


def test_soft_loss_rejects_probabilities_outside_0_1():
    args = [torch.zeros(2, dtype=D)] * 4
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        soft_dpo_loss(*args, 0.1, torch.tensor([0.5, 1.2], dtype=D))
    with pytest.raises(ValueError, match="shape"):
        soft_dpo_loss(*args, 0.1, torch.tensor([0.5], dtype=D))


# ------------------------------------------------------------------------------- listwise and distillation


@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
def test_listwise_with_two_responses_is_soft_dpo(tau):
    pol, ref, r = rand(7, 2, seed=1) * 4, rand(7, 2, seed=2) * 4, rand(7, 2, seed=3)
    beta = 0.2
    listwise = listwise_dpo_loss(pol, ref, r, beta, tau)
    p = torch.sigmoid((r[:, 0] - r[:, 1]) / tau)
    soft = soft_dpo_loss(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], beta, p)[0]
    assert torch.allclose(listwise, soft, atol=1e-12)


def test_listwise_and_distillation_ignore_masked_slots():
    pol, ref, r = rand(3, 4, seed=4), rand(3, 4, seed=5), rand(3, 4, seed=6)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    junk = torch.where(mask, pol, torch.full_like(pol, 1e6))  # whatever sits in a masked slot
    assert torch.allclose(listwise_dpo_loss(pol, ref, r, 0.1, mask=mask), listwise_dpo_loss(junk, ref, r, 0.1, mask=mask))
    assert torch.allclose(distillation_loss(pol, r, 0.1, mask=mask), distillation_loss(junk, r, 0.1, mask=mask))
    # row 1 holds two responses: the same value as a (1, 2) batch of them
    assert torch.allclose(listwise_dpo_loss(pol, ref, r, 0.1, mask=mask)[1],
                          listwise_dpo_loss(pol[1:2, :2], ref[1:2, :2], r[1:2, :2], 0.1)[0])


def _fit(loss_fn, k, steps=200):
    theta = torch.zeros(k, dtype=D, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=steps, line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                            tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        value = loss_fn(torch.log_softmax(theta, -1))
        value.backward()
        return value

    opt.step(closure)
    return torch.softmax(theta.detach(), -1)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_listwise_fit_on_the_toy_reaches_pi_star_of_tau_beta(tau):
    world, beta = toy.make_toy(), 0.5
    ref = torch.log(world.pi_ref)
    pi = _fit(lambda logp: listwise_dpo_loss(logp[None], ref[None], world.r[None], beta, tau).sum(), 6)
    assert torch.allclose(pi, toy.optimal_policy(world.pi_ref, world.r, tau * beta), atol=1e-6)


@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_soft_labels_on_every_toy_pair_reach_pi_star_of_tau_beta(tau):
    """Every pair of the toy once, p = sigma((r_i - r_j) / tau): the fitted policy is pi*_{tau beta}."""
    world, beta = toy.make_toy(), 0.4
    ref = torch.log(world.pi_ref)
    i, j = torch.triu_indices(6, 6, offset=1)
    p = torch.sigmoid((world.r[i] - world.r[j]) / tau)
    pi = _fit(lambda logp: soft_dpo_loss(logp[i], logp[j], ref[i], ref[j], beta, p)[0].mean(), 6)
    assert torch.allclose(pi, toy.optimal_policy(world.pi_ref, world.r, tau * beta), atol=1e-6)


def test_distillation_from_pi_ref_samples_reaches_pi_star():
    """Maximum likelihood on pi_ref's samples weighted by softmax(r / beta): pi* as the samples grow."""
    world, beta = toy.make_toy(), 0.7
    g = torch.Generator().manual_seed(0)
    samples = torch.multinomial(world.pi_ref, 50_000, replacement=True, generator=g)  # y_i ~ pi_ref
    rewards = world.r[samples][None]  # one prompt, 50,000 samples

    def loss(logp):
        return distillation_loss(logp[samples][None], rewards, beta).sum()

    pi = _fit(loss, 6)
    target = toy.optimal_policy(world.pi_ref, world.r, beta)
    assert (pi - target).abs().sum().item() < 0.03  # total variation of a 50,000-sample fit
    # and not pi_ref, nor the reward-softmax without pi_ref
    assert (pi - world.pi_ref).abs().sum().item() > 0.3
    assert (pi - torch.softmax(world.r / beta, -1)).abs().sum().item() > 0.3


def test_toy_fit_converges_with_bradley_terry_labels_and_runs_away_with_certain_ones():
    """The course's claim, on the toy: sampled Bradley-Terry labels give pi*_beta (tau = 1); certain
    labels of the same pairs give a policy that keeps moving past it."""
    world, beta = toy.make_toy(), 0.5
    target = toy.optimal_policy(world.pi_ref, world.r, beta)
    chosen, rejected = toy.sample_preferences(world.r, 200_000, seed=0, pi_sample=world.pi_ref)
    pi_bt, _ = toy.fit_toy_policy(world.pi_ref, chosen, rejected, beta)
    assert toy.kl_divergence(pi_bt, target).item() < 1e-3
    certain_c = torch.where(world.r[chosen] > world.r[rejected], chosen, rejected)
    certain_r = torch.where(world.r[chosen] > world.r[rejected], rejected, chosen)
    _, traj = toy.fit_toy_policy(world.pi_ref, certain_c, certain_r, beta, optimizer="adam", steps=2000, lr=0.05)
    kl_to_target = [toy.kl_divergence(traj[s], target).item() for s in (200, 1000, 2000)]
    assert kl_to_target[0] < kl_to_target[1] < kl_to_target[2]  # moving away from pi*, for ever
    assert traj[-1][0].item() > 0.99 > target[0].item()  # all mass on 'superb', the best response
    assert traj[-1][-1].item() < 1e-6 * target[-1].item()  # and pi('awful') driven towards 0


# ------------------------------------------------------------------------------- the annotator


def test_pair_targets():
    r = [0.5, 0.1, 0.5, -0.3]
    hard = pair_targets(r, "hard")
    assert (0, 2, 1.0) not in hard and (2, 0, 1.0) not in hard  # the tie
    assert len(hard) == 5 and all(r[i] > r[j] and p == 1.0 for i, j, p in hard)
    soft = pair_targets(r, "soft", tau=2.0)
    assert len(soft) == 6
    assert dict(((i, j), p) for i, j, p in soft)[(0, 3)] == pytest.approx(1 / (1 + math.exp(-0.8 / 2.0)))
    assert dict(((i, j), p) for i, j, p in soft)[(0, 2)] == 0.5
    with pytest.raises(ValueError, match="rng"):
        pair_targets(r, "bt-sampled")
    with pytest.raises(ValueError, match="target"):
        pair_targets(r, "listwise")


def test_bt_sampled_labels_follow_the_bradley_terry_probability_and_are_seeded():
    r, tau = [1.0, 0.0], 0.5
    rng = np.random.default_rng(0)
    draws = [pair_targets(r, "bt-sampled", tau, rng)[0][2] for _ in range(20_000)]
    p = 1 / (1 + math.exp(-2.0))
    assert np.mean(draws) == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / 20_000))
    a = [pair_targets(r, "bt-sampled", tau, np.random.default_rng(5)) for _ in range(2)]
    assert a[0] == a[1]


def test_groups_from_samples_drops_and_counts():
    samples = {"prompt_index": [0, 0, 0, 1, 1, 2, 2], "prompt": ["a"] * 3 + ["b"] * 2 + ["c"] * 2,
               "response": [" x", " y", " z", " u", "  ", " v", " w"],
               "ended": [True, False, True, True, True, True, True]}
    groups, counts = groups_from_samples(samples, [1, 2, 3, 4, 5, 6, 7])
    assert counts == {"n_samples": 7, "n_truncated": 1, "n_empty": 1, "n_small_groups": 1, "n_groups": 2}
    assert [g["prompt"] for g in groups] == ["a", "c"]
    assert groups[0]["responses"] == [" x", " z"] and groups[0]["rewards"] == [1.0, 3.0]


def test_target_config_names_bad_settings():
    with pytest.raises(ValueError, match="target"):
        TargetConfig(target="best-of-n")
    with pytest.raises(ValueError, match="tau"):
        TargetConfig(tau=0)
    with pytest.raises(ValueError, match="prompts_per_step"):
        TargetConfig(prompts_per_step=0)


# ------------------------------------------------------------------------------- on a real tiny GPT-2

GROUPS = [{"prompt": "The movie was", "responses": [" great.", " dull.", " not bad."], "rewards": [0.9, -0.5, 0.2]},
          {"prompt": "The plot was", "responses": [" superb!", " slow."], "rewards": [0.8, -0.3]},
          {"prompt": "The music was", "responses": [" lovely.", " flat.", " terrible.", " wonderful."],
           "rewards": [0.7, -0.2, -0.9, 0.9]}]


def test_group_logps_match_scoring_each_response_alone(tiny_tokenizer, tiny_model):
    config = TargetConfig(target="soft")
    examples = tokenize_groups(GROUPS, tiny_tokenizer, config)
    batch = collate_groups(examples, tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        table = group_logps(tiny_model, batch)  # (3, 4)
    assert table.shape == (3, 4) and batch["mask"].sum().item() == 9
    for g, group in enumerate(GROUPS):
        prompt = tiny_tokenizer(group["prompt"], add_special_tokens=False)["input_ids"]
        responses = [tiny_tokenizer(y, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
                     for y in group["responses"]]
        alone = score_responses(tiny_model, [prompt] * len(responses), responses, tiny_tokenizer.pad_token_id)
        assert np.allclose(table[g, :len(responses)].numpy(), alone, atol=1e-5)
    assert (table[~batch["mask"]] == 0).all()


def test_soft_pairs_of_two_response_groups_equal_listwise_through_the_model(tiny_tokenizer, tiny_model):
    groups = [dict(g, responses=g["responses"][:2], rewards=g["rewards"][:2]) for g in GROUPS]
    out = {}
    for target in ("soft", "listwise"):
        config = TargetConfig(target=target, beta=0.3)
        batch = collate_groups(tokenize_groups(groups, tiny_tokenizer, config), tiny_tokenizer.pad_token_id)
        policy_logps = group_logps(tiny_model, batch)
        ref_logps = policy_logps.detach() + rand(*policy_logps.shape, seed=9).float()
        out[target] = target_losses(config, policy_logps, ref_logps, batch)
    assert torch.allclose(out["soft"], out["listwise"], atol=1e-5)


@pytest.mark.parametrize("target", TARGETS)
def test_train_on_target_fits_its_target_and_is_seeded(tiny_tokenizer, target):
    from tests.conftest import build_tiny_gpt2

    config = TargetConfig(target=target, beta=0.5, lr=3e-3, warmup_steps=0, prompts_per_step=3, max_steps=20)
    ref = build_tiny_gpt2(tiny_tokenizer)
    runs = []
    for _ in range(2):
        policy = build_tiny_gpt2(tiny_tokenizer)  # starts at pi_ref
        calls = []
        out = train_on_target(policy, ref, tiny_tokenizer, GROUPS, config,
                              eval_fn=lambda m, calls=calls: calls.append(m.training) or {"n": len(calls)},
                              eval_steps=(0, 10, 20), progress=False)
        runs.append((policy, out))
    policy, out = runs[0]
    losses = [h["loss"] for h in out["history"]]
    assert losses[-1] < losses[0]  # every step sees the same three groups: the loss must fall
    assert [p["step"] for p in out["path"]] == [0, 10, 20] and calls == [False, False, False]
    assert losses == [h["loss"] for h in runs[1][1]["history"]]  # same seed, same run
    # the implicit rewards of the training responses now rise with the reward
    examples = tokenize_groups(GROUPS, tiny_tokenizer, config)
    batch = collate_groups(examples, tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        implicit = (group_logps(policy, batch) - group_logps(ref, batch))[batch["mask"]].numpy()
    rewards = batch["rewards"][batch["mask"]].numpy()
    prompt_of = np.repeat(np.arange(3), [len(g["responses"]) for g in GROUPS])
    assert calibration_slope(implicit, rewards, prompt_of) > 0
    n_pairs = {"hard": 3 + 1 + 6, "bt-sampled": 3 + 1 + 6, "soft": 3 + 1 + 6}.get(target, 3)
    assert out["n_terms"] == n_pairs


def test_calibration_slope():
    g = np.repeat(np.arange(5), 4)
    r = np.random.default_rng(0).normal(size=20)
    implicit = 2.0 * r + 10 * g  # a per-prompt constant does not count
    assert calibration_slope(implicit, r, g) == pytest.approx(2.0)
    assert math.isnan(calibration_slope(np.zeros(4), np.ones(4), np.zeros(4)))


def test_token_kl_matches_a_naive_per_prefix_sum(tiny_tokenizer):
    from tests.conftest import build_tiny_gpt2

    policy, ref = build_tiny_gpt2(tiny_tokenizer, seed=1), build_tiny_gpt2(tiny_tokenizer, seed=2)
    prompt = tiny_tokenizer("The movie was", add_special_tokens=False)["input_ids"]
    responses = [tiny_tokenizer(" great.", add_special_tokens=False)["input_ids"], [tiny_tokenizer.eos_token_id]]
    got = token_kl(policy, ref, [prompt, prompt], responses, tiny_tokenizer.pad_token_id)
    for value, response in zip(got, responses):
        naive, context = 0.0, list(prompt)
        for token in response:
            with torch.no_grad():
                lp = torch.log_softmax(policy(input_ids=torch.tensor([context])).logits[0, -1].double(), -1)
                lq = torch.log_softmax(ref(input_ids=torch.tensor([context])).logits[0, -1].double(), -1)
            naive += (lp.exp() * (lp - lq)).sum().item()
            context.append(token)
        assert value == pytest.approx(naive, rel=1e-4)
    assert np.allclose(token_kl(ref, ref, [prompt], responses[:1], tiny_tokenizer.pad_token_id), 0.0, atol=1e-6)


# ------------------------------------------------------------------------------- the pairs pipeline


def _ranked_pairs():
    from tests.conftest import build_tiny_pairs

    return [dict(p, chosen_reward=0.5 + 0.1 * i, rejected_reward=-0.2 * (i % 3)) for i, p in enumerate(build_tiny_pairs())]


def test_annotate_pairs_expected_and_sampled():
    from helpers.pairs import annotate_pairs

    pairs = _ranked_pairs()
    expected, stats = annotate_pairs(pairs, tau=0.5)
    gap = pairs[3]["chosen_reward"] - pairs[3]["rejected_reward"]
    assert expected[3]["chosen_prob"] == pytest.approx(1 / (1 + math.exp(-gap / 0.5)))
    assert expected[3]["chosen"] == pairs[3]["chosen"] and stats["n_flipped"] == 0
    many = pairs * 500
    sampled, stats = annotate_pairs(many, tau=0.5, mode="sampled", seed=3)
    flipped = [s["chosen"] != p["chosen"] for s, p in zip(sampled, many)]
    assert stats["n_flipped"] == sum(flipped) > 0
    assert all(s["chosen_prob"] == 1.0 for s in sampled)
    # a flipped pair carries its rewards along: the new chosen reward is the lower one
    f = flipped.index(True)
    assert sampled[f]["chosen_reward"] == many[f]["rejected_reward"]
    p_flip = np.mean([1 - e["chosen_prob"] for e in expected])
    assert np.mean(flipped) == pytest.approx(p_flip, abs=4 * math.sqrt(p_flip * (1 - p_flip) / len(many)))
    assert annotate_pairs(many, 0.5, "sampled", seed=3)[0] == sampled  # seeded
    with pytest.raises(ValueError, match="tau"):
        annotate_pairs(pairs, tau=0.0)
    with pytest.raises(ValueError, match="record 0"):
        annotate_pairs([{"prompt": "a", "chosen": "b", "rejected": "c"}])


def test_train_dpo_soft_loss_with_certain_probabilities_is_plain_dpo(tiny_tokenizer):
    from dataclasses import replace

    from helpers.train import DPOConfig, train_dpo
    from tests.conftest import build_tiny_gpt2

    pairs = [dict(p, chosen_prob=1.0) for p in _ranked_pairs()]
    config = DPOConfig(beta=0.5, lr=1e-3, batch_size=4, max_steps=4)
    runs = {}
    for loss_type in ("sigmoid", "soft"):
        runs[loss_type] = train_dpo(build_tiny_gpt2(tiny_tokenizer), build_tiny_gpt2(tiny_tokenizer), tiny_tokenizer,
                                    pairs, replace(config, loss_type=loss_type), progress=False)
    for a, b in zip(runs["sigmoid"], runs["soft"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    half = [dict(p, chosen_prob=0.5) for p in pairs]  # an annotator who knows nothing: nothing to learn
    metrics = train_dpo(build_tiny_gpt2(tiny_tokenizer), build_tiny_gpt2(tiny_tokenizer), tiny_tokenizer, half,
                        replace(config, loss_type="soft"), progress=False)
    assert metrics[0]["loss"] == pytest.approx(math.log(2), rel=1e-5) and metrics[0]["grad_norm"] < 1e-5
    with pytest.raises(ValueError, match="chosen_prob"):
        train_dpo(build_tiny_gpt2(tiny_tokenizer), build_tiny_gpt2(tiny_tokenizer), tiny_tokenizer, _ranked_pairs(),
                  replace(config, loss_type="soft"), progress=False)


def test_a_pair_label_probability_is_part_of_the_pairs_fingerprint():
    from helpers.cache import records_fingerprint

    pairs = _ranked_pairs()
    soft = [dict(p, chosen_prob=0.7) for p in pairs]
    assert records_fingerprint(pairs) != records_fingerprint(soft) != records_fingerprint(
        [dict(p, chosen_prob=0.8) for p in pairs])
    assert records_fingerprint([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs]) == \
        records_fingerprint(pairs)  # unchanged for the course's pairs (their runs stay cached)
