"""Checkers of notebook 03 (deriving DPO)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from helpers import toy
from helpers.checks._core import Verdict, _checker, _close, _compare, _fail, _pass, _run, _Stop, _t
from helpers.losses import dpo_loss


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
            (-F.logsigmoid(beta * ((pc - pr) + (rc - rr)).double()),
             "the reference's log-ratio is added; it is subtracted: h = (log pi(y_w) - log pi(y_l)) - "
             "(log ref(y_w) - log ref(y_l)), the *change* from the reference."),
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


@_checker
def check_dpo_gradient(fn) -> Verdict:
    """Exercise (03, needs a derivation): ``dpo_gradient(theta, pi_ref, w, l, beta)`` -> (K,) the gradient of
    one pair's DPO loss -log sigma(beta h) with respect to the logits theta of pi_theta = softmax(theta),
    where h = log pi_theta(w)/pi_theta(l) - log pi_ref(w)/pi_ref(l). Checked against autograd."""
    name = "dpo_gradient"
    g = torch.Generator().manual_seed(3)
    for k, w, l, beta in ((6, 0, 4, 0.5), (5, 3, 1, 2.0), (4, 2, 0, 0.1)):
        theta = torch.randn(k, generator=g, dtype=torch.float64)
        pi_ref = torch.softmax(torch.randn(k, generator=g, dtype=torch.float64), -1)
        t = theta.clone().requires_grad_(True)
        logp = torch.log_softmax(t, -1)
        h = (logp[w] - logp[l]) - (torch.log(pi_ref[w]) - torch.log(pi_ref[l]))
        (-F.logsigmoid(beta * h)).backward()
        expected = t.grad.detach()
        got = _run(name, fn, theta.clone(), pi_ref.clone(), w, l, beta)
        hv = float(h.detach())
        e = torch.zeros(k, dtype=torch.float64)
        e[w], e[l] = 1.0, -1.0
        wrongs = [
            (-expected, "wrong sign: that is the step gradient descent takes (theta_w up, theta_l down); the "
                        "gradient itself points the other way -- its w component is negative."),
            (expected / beta, "beta is missing: d/dh of -log sigma(beta h) is -beta sigma(-beta h)."),
            (-beta * torch.sigmoid(torch.tensor(beta * hv, dtype=torch.float64)) * e,
             "sigma(beta h) where sigma(-beta h) belongs: d/dx log sigma(x) = sigma(-x) = 1 - sigma(x). The weight "
             "is large when the pair is ranked *wrong* (h < 0), not when it is already right."),
            (-beta * e, "the weight sigma(-beta h) is missing: every pair would push equally hard, however well it "
                        "is already ranked."),
            (-beta * torch.sigmoid(-beta * (theta[w] - theta[l])) * e,
             "pi_ref is missing from h: the direction e_w - e_l is right, but the weight is sigma(-beta h) with "
             "h = (theta_w - theta_l) - log(pi_ref(w) / pi_ref(l)), the reference's log-ratio included."),
        ]
        _compare(name, got, expected, wrongs, f"K = {k} responses, pair ({w}, {l}), beta = {beta}", tol=1e-8)
    return _pass(name, "-beta sigma(-beta h) (e_w - e_l): the softmax's normaliser cancels in the log-ratio, so "
                       "only the two logits move, weighted by how wrong the pair still is.")
