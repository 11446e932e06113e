"""DPO / cDPO / IPO / Bradley-Terry losses against closed forms and hand-computed values."""

import math

import pytest
import torch

from helpers.losses import bradley_terry_loss, dpo_loss, ipo_loss, preference_logratios, preference_loss


def logps(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_dpo_loss_is_ln2_when_policy_equals_reference():
    pc, pr = logps(-3.0, -10.0, -0.5), logps(-4.0, -2.0, -7.0)
    for eps in (0.0, 0.1, 0.3):
        losses, cr, rr = dpo_loss(pc, pr, pc.clone(), pr.clone(), beta=0.1, label_smoothing=eps)
        assert torch.allclose(losses, torch.full((3,), math.log(2.0)), atol=1e-7)
        assert torch.equal(cr, torch.zeros(3)) and torch.equal(rr, torch.zeros(3))


def test_dpo_loss_hand_computed():
    # h = (-1 - -3) - (-2 - -2) = 2 ; beta h = 1 ; loss = -log sigmoid(1) = log(1 + e^-1)
    losses, cr, rr = dpo_loss(logps(-1.0), logps(-3.0), logps(-2.0), logps(-2.0), beta=0.5)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-6)
    assert cr.item() == pytest.approx(0.5 * (-1.0 + 2.0))
    assert rr.item() == pytest.approx(0.5 * (-3.0 + 2.0))


def test_cdpo_hand_computed():
    eps, beta, h = 0.2, 0.5, 2.0
    expected = -(1 - eps) * math.log(1 / (1 + math.exp(-beta * h))) - eps * math.log(1 / (1 + math.exp(beta * h)))
    losses, _, _ = dpo_loss(logps(-1.0), logps(-3.0), logps(-2.0), logps(-2.0), beta=beta, label_smoothing=eps)
    assert losses.item() == pytest.approx(expected, abs=1e-6)


def test_ipo_hand_computed():
    # h = 2, beta = 0.5 -> target 1/(2*0.5) = 1 -> (2 - 1)^2 = 1 ; beta = 0.25 -> target 2 -> 0
    losses, _, _ = ipo_loss(logps(-1.0), logps(-3.0), logps(-2.0), logps(-2.0), beta=0.5)
    assert losses.item() == pytest.approx(1.0)
    losses, _, _ = ipo_loss(logps(-1.0), logps(-3.0), logps(-2.0), logps(-2.0), beta=0.25)
    assert losses.item() == pytest.approx(0.0)


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_dpo_gradient_matches_closed_form(beta):
    # d loss / d h = -beta * sigmoid(-beta h)
    h = torch.tensor([-5.0, -0.3, 0.0, 0.7, 4.0], requires_grad=True)
    zeros = torch.zeros_like(h)
    losses, _, _ = dpo_loss(h, zeros, zeros, zeros, beta=beta)
    (grad,) = torch.autograd.grad(losses.sum(), h)
    assert torch.allclose(grad, -beta * torch.sigmoid(-beta * h.detach()), atol=1e-6)


def test_dpo_gradient_matches_finite_differences():
    torch.manual_seed(0)
    args = [torch.randn(4, dtype=torch.float64) for _ in range(4)]
    args[0].requires_grad_(True)
    loss = dpo_loss(*args, beta=0.3, label_smoothing=0.1)[0].sum()
    (grad,) = torch.autograd.grad(loss, args[0])
    step = 1e-6
    for i in range(4):
        up, down = [a.detach().clone() for a in args], [a.detach().clone() for a in args]
        up[0][i] += step
        down[0][i] -= step
        fd = (dpo_loss(*up, beta=0.3, label_smoothing=0.1)[0].sum() - dpo_loss(*down, beta=0.3, label_smoothing=0.1)[0].sum()) / (2 * step)
        assert grad[i].item() == pytest.approx(fd.item(), abs=1e-6)


@pytest.mark.parametrize("scale", [1e2, 1e3, 1e4])
def test_dpo_loss_finite_at_extreme_margins(scale):
    h = torch.tensor([scale, -scale], dtype=torch.float32, requires_grad=True)
    zeros = torch.zeros(2)
    losses, _, _ = dpo_loss(h, zeros, zeros, zeros, beta=1.0)
    assert torch.isfinite(losses).all()
    assert losses[0].item() == pytest.approx(0.0, abs=1e-6)  # confident and right
    assert losses[1].item() == pytest.approx(scale, rel=1e-6)  # confident and wrong: -log sigmoid(-s) ~ s
    losses.sum().backward()
    assert torch.isfinite(h.grad).all()
    # the naive form overflows where ours does not
    naive = -torch.log(torch.sigmoid(-h.detach()[0]))
    assert not torch.isfinite(naive) or scale < 100


def test_bradley_terry_loss():
    assert bradley_terry_loss(torch.tensor([1.0]), torch.tensor([1.0])).item() == pytest.approx(math.log(2))
    assert bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(math.log1p(math.exp(-2)))
    assert torch.isfinite(bradley_terry_loss(torch.tensor([-1e4]), torch.tensor([1e4]))).all()


def test_bradley_terry_shift_invariant():
    s_w, s_l = torch.tensor([0.3, -1.2]), torch.tensor([-0.4, 2.0])
    assert torch.allclose(bradley_terry_loss(s_w, s_l), bradley_terry_loss(s_w + 7.0, s_l + 7.0))


def test_logratios_and_dispatch():
    args = (logps(-1.0), logps(-3.0), logps(-2.5), logps(-2.0))
    assert preference_logratios(*args).item() == pytest.approx(2.5)
    assert torch.equal(preference_loss("sigmoid", *args, beta=0.1)[0], dpo_loss(*args, beta=0.1)[0])
    assert torch.equal(preference_loss("ipo", *args, beta=0.1)[0], ipo_loss(*args, beta=0.1)[0])
    with pytest.raises(ValueError, match="unknown loss_type"):
        preference_loss("hinge", *args, beta=0.1)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(*args, beta=0.1, label_smoothing=0.7)
