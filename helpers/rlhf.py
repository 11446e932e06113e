"""The RLHF pipeline DPO replaces: PPO and RLOO against a reward, with a KL penalty, from scratch.

RLHF (Ziegler et al. 2019, Stiennon et al. 2020, Ouyang et al. 2022) maximises

    J(pi) = E_{x, y ~ pi}[ r(x, y) ] - beta * KL(pi(.|x) || pi_ref(.|x))

whose maximiser is pi* = pi_ref * exp(r / beta) / Z -- the same pi* DPO fits from preferences.
This module reaches it the RL way, no RL library:

* rollouts by *pure* sampling (``top_k=0, top_p=1``) and re-scoring at the same temperature, so the
  log-probs are those of the distribution that produced the samples (``helpers.evaluate.generate_responses``,
  the course's one sampler, and ``response_logprobs``);
* PPO (Schulman et al. 2017) as in Ziegler et al.: per-token reward -beta * (log pi - log pi_ref)
  with the score added on the last response token (``kl_penalized_rewards``), a zero-initialised
  value head on the policy (``ValueHead``), GAE (``compute_gae``), advantage whitening (``whiten``),
  the clipped ratio and clipped value loss (``ppo_policy_loss``, ``ppo_value_loss``), several epochs
  per rollout batch (``ppo_step``), a fixed or adaptive KL coefficient (``FixedKLController``,
  ``AdaptiveKLController``);
* RLOO (Ahmadian et al. 2024): k samples per prompt, each one's baseline the mean reward of the
  other k - 1 (``rloo_advantages``, ``rloo_step``);
* tabular PPO/RLOO for the discrete toy world (``tabular_ppo``, ``tabular_rloo``), which converge
  to pi* in closed form -- the check that RLHF and DPO aim at the same policy.

Responses that reach ``max_new_tokens`` without EOS (the stated policy): they are kept, truncated,
scored as they are and their KL counted over the tokens they have; their rate is reported
(``eos_rate``). ``missing_eos_penalty`` (off by default) subtracts a constant from their score,
as TRL's option of the same name does, for runs that want to discourage rambling.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from helpers.data import pad_rows
from helpers.evaluate import generate_responses
from helpers.logprobs import IGNORE_INDEX, token_logprobs
from helpers.validate import check_number

# ----------------------------------------------------------------------------------------------
# Configuration and the KL coefficient
# ----------------------------------------------------------------------------------------------


@dataclass
class RLHFConfig:
    """Hyper-parameters of PPO and RLOO (one dataclass so runs can be saved next to their results)."""

    beta: float = 0.1  # KL coefficient (initial value when target_kl is set)
    lr: float = 1e-4
    batch_size: int = 64  # prompts per rollout batch (RLOO: prompts; each gets rloo_k samples)
    mini_batch_size: int = 16
    ppo_epochs: int = 4  # optimisation passes over each rollout batch
    clip_range: float = 0.2  # policy ratio clipped to [1 - eps, 1 + eps]
    clip_range_value: float = 0.2  # value predictions move at most this far from the old ones
    vf_coef: float = 0.1  # weight of the value loss (value head shares the policy's body)
    gamma: float = 1.0
    lam: float = 0.95
    max_new_tokens: int = 32
    temperature: float = 1.0
    rloo_k: int = 4
    rloo_epochs: int = 1  # 1 = plain on-policy REINFORCE with the leave-one-out baseline
    target_kl: float | None = None  # set to use the adaptive controller
    horizon: int = 10_000
    missing_eos_penalty: float | None = None
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self):
        """Every field checked when the config is made."""
        c, owner = check_number, "RLHFConfig"
        c(owner, "beta", self.beta, low=0, why="the KL coefficient; < 0 rewards moving away from pi_ref")
        c(owner, "lr", self.lr, low=0, low_open=True)
        for name in ("batch_size", "mini_batch_size", "ppo_epochs", "max_new_tokens", "rloo_epochs", "horizon"):
            c(owner, name, getattr(self, name), integer=True, low=1)
        c(owner, "mini_batch_size", self.mini_batch_size, integer=True, low=1, high=self.batch_size,
          why="a mini-batch is part of the rollout batch")
        c(owner, "clip_range", self.clip_range, low=0, low_open=True)
        c(owner, "clip_range_value", self.clip_range_value, low=0, low_open=True)
        c(owner, "vf_coef", self.vf_coef, low=0)
        c(owner, "gamma", self.gamma, low=0, high=1)
        c(owner, "lam", self.lam, low=0, high=1)
        c(owner, "temperature", self.temperature, low=0, low_open=True)
        c(owner, "rloo_k", self.rloo_k, integer=True, low=2, why="the leave-one-out baseline needs another sample")
        c(owner, "target_kl", self.target_kl, low=0, low_open=True, optional=True)
        c(owner, "missing_eos_penalty", self.missing_eos_penalty, optional=True)
        c(owner, "max_grad_norm", self.max_grad_norm, low=0, low_open=True)
        c(owner, "seed", self.seed, integer=True, low=0)

    def to_dict(self) -> dict:
        return asdict(self)


class FixedKLController:
    """A constant beta: what a frontier sweep needs (one point per beta)."""

    def __init__(self, beta: float):
        self.value = beta

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Ziegler et al. (2019), eq. 2: steer beta so that the measured KL tracks ``target``.

        e = clip(KL / target - 1, -0.2, 0.2);   beta <- beta * (1 + e * n_steps / horizon)

    A KL above target raises beta (pulls the policy back), below target lowers it. ``horizon``
    (in samples) sets how fast: a 20% error changes beta by 20% over one horizon.
    """

    def __init__(self, init_beta: float, target: float, horizon: int):
        self.value = init_beta
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


def make_kl_controller(config: RLHFConfig):
    if config.target_kl is None:
        return FixedKLController(config.beta)
    return AdaptiveKLController(config.beta, config.target_kl, config.horizon)


# ----------------------------------------------------------------------------------------------
# Small tensor utilities
# ----------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased (Bessel-corrected) variance over the masked entries."""
    mean = masked_mean(x, mask)
    n = mask.sum().to(x.dtype)
    return ((x - mean) ** 2 * mask).sum() / (n - 1).clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True,
           eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries; masked-out entries come back as 0.

    Whitening the advantages makes the step size independent of the reward's scale (which drifts
    as the KL penalty grows) and centres them so that about half the tokens are pushed down.
    ``shift_mean=False`` only rescales (used for rewards, whose sign matters).
    """
    if mask is None:
        mask = torch.ones_like(x, dtype=torch.bool)
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


# ----------------------------------------------------------------------------------------------
# Rollouts: sample, pack, re-score
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def pack_rollout(prompts: list[list[int]], responses: list[list[int]], pad_token_id: int,
                 device: torch.device | str = "cpu") -> dict:
    """Right-padded prompt+response rows and the index that picks out each response's positions.

    Returns a dict:
        input_ids, attention_mask, labels: (B, T); labels are -100 on prompt and padding.
        resp_index: (B, R) long; column t is the position in the (B, T-1) shifted log-prob tensor
            that scores response token t (prompt_len - 1 + t). R = the longest response.
        resp_mask: (B, R) bool, True for the real response tokens (EOS included).
    """
    B = len(prompts)
    T = max(len(p) + len(r) for p, r in zip(prompts, responses))
    R = max(len(r) for r in responses)
    input_ids, attention_mask = pad_rows([p + r for p, r in zip(prompts, responses)], pad_token_id)  # (B, T)
    labels, _ = pad_rows([[IGNORE_INDEX] * len(p) + r for p, r in zip(prompts, responses)], IGNORE_INDEX)
    resp_index = torch.zeros((B, R), dtype=torch.long)
    resp_mask = torch.zeros((B, R), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        resp_index[i] = (len(p) - 1 + torch.arange(R)).clamp(max=T - 2)
        resp_mask[i, : len(r)] = True
    batch = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                 resp_index=resp_index, resp_mask=resp_mask)
    return {k: v.to(device) for k, v in batch.items()}


class ValueHead(nn.Module):
    """V(state) = w . h_t + b on the policy's last hidden state, zero-initialised.

    Zero init makes every first value estimate 0, so the first advantages are the plain discounted
    rewards and the untrained head cannot inject noise into the first policy steps.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, T)
        return self.linear(hidden).squeeze(-1)


def response_logprobs(model, batch: dict, temperature: float = 1.0,
                      value_head: ValueHead | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(y_t | x, y_<t) for every response token, and V at the state before each token.

    The logits are divided by the sampling temperature before the log-softmax: the scored
    distribution must be the one sampled from.

    Args:
        model: causal LM. batch: from ``pack_rollout``.
    Returns:
        logps: (B, R), 0 where ``resp_mask`` is False.
        values: (B, R) or None; values[:, t] is read at the position that predicts token t.
    """
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                output_hidden_states=value_head is not None)
    logits = out.logits / temperature
    logps, _ = token_logprobs(logits, batch["labels"])  # (B, T-1)
    idx, mask = batch["resp_index"], batch["resp_mask"]
    logps = torch.gather(logps, 1, idx) * mask
    values = None
    if value_head is not None:
        v = value_head(out.hidden_states[-1].float())[:, :-1]  # (B, T-1), aligned with logps
        values = torch.gather(v, 1, idx) * mask
    return logps, values


# ----------------------------------------------------------------------------------------------
# PPO pieces
# ----------------------------------------------------------------------------------------------


def kl_penalized_rewards(scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor,
                         mask: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards r_t = -beta * (log pi(y_t) - log pi_ref(y_t)), plus the score on the last token.

    Summed over a response, the penalty is -beta * log(pi(y|x) / pi_ref(y|x)), whose expectation
    under pi is -beta * KL(pi || pi_ref): the RLHF objective, credited token by token.

    Args:
        scores: (B,) reward-model (or ground-truth) scores. logps, ref_logps, mask: (B, R).
    Returns:
        rewards: (B, R), 0 where masked. kl: (B, R) per-token log-ratios (the k1 KL estimate).
    """
    kl = (logps - ref_logps) * mask
    rewards = -beta * kl
    last = mask.long().sum(1) - 1  # (B,) index of each response's last token (EOS if present)
    rewards = rewards.scatter_add(1, last.unsqueeze(1), scores.to(rewards.dtype).unsqueeze(1))
    return rewards * mask, kl


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                gamma: float = 1.0, lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over left-aligned responses.

        delta_t = r_t + gamma * V_{t+1} - V_t          (V past the last token = 0: episode ends)
        A_t     = delta_t + gamma * lam * A_{t+1}
        returns = A + V  (the value head's regression target)

    Args:
        rewards, values: (B, R). mask: (B, R) bool, True on a prefix of each row.
    Returns:
        advantages, returns: (B, R), 0 where masked.
    """
    mask_f = mask.to(rewards.dtype)
    rewards, values = rewards * mask_f, values * mask_f
    R = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(R)):
        next_value = values[:, t + 1] if t + 1 < R else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask_f[:, t]
        advantages[:, t] = last
    return advantages, (advantages + values) * mask_f


def ppo_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, clip_range: float = 0.2) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate, negated for gradient descent.

        ratio = pi(y_t) / pi_old(y_t)
        loss  = mean( max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)) )

    Once the ratio has left [1 - eps, 1 + eps] in the direction the advantage favours, the clipped
    branch is the max and is constant in theta: that token's gradient is exactly zero, which is
    what keeps several epochs on one batch from running away.

    Args: all (B, R) (or (B, 1) for sequence-level use). Returns: loss, stats (clipfrac, approx_kl).
    """
    log_ratio = logps - old_logps
    ratio = torch.exp(log_ratio)
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.max(loss1, loss2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((loss2 > loss1).float(), mask).item()
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask).item()  # k3 estimate of KL(old||new)
    return loss, {"clipfrac": clipfrac, "approx_kl": approx_kl}


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                   mask: torch.Tensor, clip_range_value: float = 0.2) -> torch.Tensor:
    """Clipped value loss: 0.5 * mean(max((V - G)^2, (V_clip - G)^2)), V_clip within +-c of V_old."""
    clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def kl_estimates(logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor | None = None
                 ) -> dict[str, torch.Tensor]:
    """Per-sequence estimates of KL(pi || pi_ref) from tokens sampled from pi.

        k1 = sum_t (log pi - log pi_ref)                      unbiased; single samples can be < 0
        k3 = sum_t (pi_ref/pi - 1 - log(pi_ref/pi))           >= 0 per token; unbiased per token

    Args: (B, R) per-token log-probs of the sampled tokens. Returns: {"k1": (B,), "k3": (B,)}.
    """
    if mask is None:
        mask = torch.ones_like(logps, dtype=torch.bool)
    log_r = (ref_logps - logps) * mask
    k1 = -log_r.sum(-1)
    k3 = ((torch.exp(log_r) - 1 - log_r) * mask).sum(-1)
    return {"k1": k1, "k3": k3}


# ----------------------------------------------------------------------------------------------
# One PPO / RLOO iteration on a language model
# ----------------------------------------------------------------------------------------------


def _score(score_fn, prompts, responses, has_eos, config, device) -> torch.Tensor:
    scores = torch.as_tensor(score_fn(prompts, responses), dtype=torch.float32, device=device)
    if config.missing_eos_penalty is not None:
        scores = scores - config.missing_eos_penalty * (~torch.tensor(has_eos, device=device)).float()
    return scores


def _rollout_stats(scores, seq_kl, responses, has_eos, beta) -> dict:
    return {
        "score": scores.mean().item(),
        "kl": seq_kl.mean().item(),
        "objective": (scores - beta * seq_kl).mean().item(),
        "beta": beta,
        "response_len": sum(len(r) for r in responses) / len(responses),
        "eos_rate": sum(has_eos) / len(has_eos),
    }


def ppo_step(policy, value_head: ValueHead, ref_model, optimizer, prompts: list[list[int]],
             score_fn, config: RLHFConfig, kl_ctl, eos_token_id: int, pad_token_id: int) -> dict:
    """Collect one rollout batch, then ``ppo_epochs`` passes of clipped updates over it.

    The policy runs in eval mode throughout (dropout off): with dropout the ratio pi/pi_old would
    not start at 1 and the clip would bite on noise.

    Args:
        policy: causal LM being trained; value_head: on its last hidden state.
        ref_model: frozen pi_ref. optimizer: over policy and value-head parameters.
        prompts: batch_size lists of token ids.
        score_fn: (prompts, responses) -> (B,) scores (learned reward model or ground truth).
    Returns:
        stats dict: score, kl, objective, beta, response_len, eos_rate, losses, clipfrac, approx_kl.
    """
    device = next(policy.parameters()).device
    policy.eval()
    responses, has_eos = generate_responses(policy, prompts, config.max_new_tokens, config.temperature,
                                          eos_token_id, pad_token_id)
    batch = pack_rollout(prompts, responses, pad_token_id, device)
    mask = batch["resp_mask"]
    with torch.no_grad():
        old_logps, old_values = response_logprobs(policy, batch, config.temperature, value_head)
        ref_logps, _ = response_logprobs(ref_model, batch, config.temperature)
        scores = _score(score_fn, prompts, responses, has_eos, config, device)
        beta = kl_ctl.value
        rewards, kl = kl_penalized_rewards(scores, old_logps, ref_logps, mask, beta)
        advantages, returns = compute_gae(rewards, old_values, mask, config.gamma, config.lam)
        advantages = whiten(advantages, mask)
    B = len(prompts)
    stats = {"pg_loss": 0.0, "vf_loss": 0.0, "clipfrac": 0.0, "approx_kl": 0.0}
    n_updates = 0
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for _ in range(config.ppo_epochs):
        for idx in torch.randperm(B).split(config.mini_batch_size):
            mb = {k: v[idx] for k, v in batch.items()}
            logps, values = response_logprobs(policy, mb, config.temperature, value_head)
            pg_loss, pg_stats = ppo_policy_loss(logps, old_logps[idx], advantages[idx],
                                                mb["resp_mask"], config.clip_range)
            vf_loss = ppo_value_loss(values, old_values[idx], returns[idx], mb["resp_mask"],
                                     config.clip_range_value)
            loss = pg_loss + config.vf_coef * vf_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            stats["pg_loss"] += pg_loss.item()
            stats["vf_loss"] += vf_loss.item()
            stats["clipfrac"] += pg_stats["clipfrac"]
            stats["approx_kl"] += pg_stats["approx_kl"]
            n_updates += 1
    stats = {k: v / n_updates for k, v in stats.items()}
    seq_kl = kl.sum(1)
    kl_ctl.update(seq_kl.mean().item(), B)
    stats.update(_rollout_stats(scores, seq_kl, responses, has_eos, beta))
    return stats


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """A_i = R_i - mean_{j != i} R_j over the k samples of one prompt.

    The baseline of each sample is built without it, so it is independent of that sample's action
    and the gradient stays unbiased (a plain group mean would include R_i itself).

    Args: rewards (P, k), k >= 2. Returns: (P, k).
    """
    k = rewards.shape[1]
    if k < 2:
        raise ValueError("RLOO needs k >= 2 samples per prompt")
    baseline = (rewards.sum(1, keepdim=True) - rewards) / (k - 1)
    return rewards - baseline


def rloo_step(policy, ref_model, optimizer, prompts: list[list[int]], score_fn, config: RLHFConfig,
              kl_ctl, eos_token_id: int, pad_token_id: int) -> dict:
    """REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024), sequence-level.

    Each prompt is sampled ``rloo_k`` times; R = score - beta * log(pi(y|x) / pi_ref(y|x)) is one
    number per response (no value head, no GAE); the loss is -A * log pi(y|x). With
    ``rloo_epochs > 1`` the sequence-level ratio is clipped as in PPO.
    """
    device = next(policy.parameters()).device
    policy.eval()
    k = config.rloo_k
    rep_prompts = [p for p in prompts for _ in range(k)]  # (P*k), the k copies adjacent
    responses, has_eos = generate_responses(policy, rep_prompts, config.max_new_tokens,
                                          config.temperature, eos_token_id, pad_token_id)
    batch = pack_rollout(rep_prompts, responses, pad_token_id, device)
    mask = batch["resp_mask"]
    with torch.no_grad():
        old_logps, _ = response_logprobs(policy, batch, config.temperature)
        ref_logps, _ = response_logprobs(ref_model, batch, config.temperature)
        scores = _score(score_fn, rep_prompts, responses, has_eos, config, device)
        beta = kl_ctl.value
        seq_kl = ((old_logps - ref_logps) * mask).sum(1)
        rewards = scores - beta * seq_kl
        advantages = rloo_advantages(rewards.view(-1, k)).view(-1)
        old_seq = old_logps.sum(1)
    n = len(rep_prompts)
    mb_size = config.mini_batch_size * k
    params = [p for g in optimizer.param_groups for p in g["params"]]
    losses, n_updates, clipfrac = 0.0, 0, 0.0
    for _ in range(config.rloo_epochs):
        for idx in torch.randperm(n).split(mb_size):
            mb = {key: v[idx] for key, v in batch.items()}
            logps, _ = response_logprobs(policy, mb, config.temperature)
            seq = logps.sum(1, keepdim=True)
            ones = torch.ones_like(seq, dtype=torch.bool)
            loss, st = ppo_policy_loss(seq, old_seq[idx].unsqueeze(1), advantages[idx].unsqueeze(1),
                                       ones, config.clip_range)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            losses += loss.item()
            clipfrac += st["clipfrac"]
            n_updates += 1
    kl_ctl.update(seq_kl.mean().item(), n)
    stats = {"pg_loss": losses / n_updates, "clipfrac": clipfrac / n_updates}
    stats.update(_rollout_stats(scores, seq_kl, responses, has_eos, beta))
    return stats


def train_rlhf(method: str, policy, ref_model, prompts: list[list[int]], score_fn, config: RLHFConfig,
               steps: int, eos_token_id: int, pad_token_id: int, progress: bool = True,
               callback=None) -> dict:
    """Run ``steps`` PPO or RLOO iterations; prompts are drawn in order, cycling, ``batch_size`` a step.

    Args:
        method: "ppo" or "rloo". policy: trained in place. ref_model: frozen.
        callback: optional fn(step, stats) (e.g. a live plot).
    Returns:
        {"history": [stats per step], "value_head": the trained head or None, "wall_s": seconds,
         "samples": number of responses generated, "config": config.to_dict()}
    """
    from tqdm.auto import tqdm

    if method not in ("ppo", "rloo"):
        raise ValueError(f"method must be 'ppo' or 'rloo', got {method!r}")
    torch.manual_seed(config.seed)
    device = next(policy.parameters()).device
    ref_model.eval()
    for p in ref_model.parameters():
        p.requires_grad_(False)
    value_head = None
    params = list(policy.parameters())
    if method == "ppo":
        value_head = ValueHead(policy.config.hidden_size if hasattr(policy.config, "hidden_size")
                               else policy.config.n_embd).to(device)
        params += list(value_head.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr)
    kl_ctl = make_kl_controller(config)
    history, samples, start = [], 0, 0
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=method.upper(), disable=not progress)
    for step in bar:
        batch_prompts = [prompts[(start + i) % len(prompts)] for i in range(config.batch_size)]
        start += config.batch_size
        if method == "ppo":
            stats = ppo_step(policy, value_head, ref_model, optimizer, batch_prompts, score_fn, config,
                             kl_ctl, eos_token_id, pad_token_id)
            samples += config.batch_size
        else:
            stats = rloo_step(policy, ref_model, optimizer, batch_prompts, score_fn, config, kl_ctl,
                              eos_token_id, pad_token_id)
            samples += config.batch_size * config.rloo_k
        stats["step"] = step
        history.append(stats)
        bar.set_postfix(score=f"{stats['score']:.3f}", kl=f"{stats['kl']:.2f}")
        if callback is not None:
            callback(step, stats)
    return {"history": history, "value_head": value_head, "wall_s": time.perf_counter() - t0,
            "samples": samples, "config": config.to_dict()}


# ----------------------------------------------------------------------------------------------
# Tabular PPO / RLOO on the discrete toy world
# ----------------------------------------------------------------------------------------------


def _as_table(pi_ref: torch.Tensor, reward: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    pi_ref = torch.as_tensor(pi_ref, dtype=torch.float64)
    reward = torch.as_tensor(reward, dtype=torch.float64)
    squeeze = pi_ref.dim() == 1
    if squeeze:
        pi_ref, reward = pi_ref.unsqueeze(0), reward.unsqueeze(0)
    if pi_ref.shape != reward.shape:
        raise ValueError(f"pi_ref {tuple(pi_ref.shape)} and reward {tuple(reward.shape)} differ")
    return pi_ref, reward, squeeze


def tabular_ppo(pi_ref, reward, beta: float, steps: int = 300, batch_size: int = 512,
                ppo_epochs: int = 4, lr: float = 0.05, clip_range: float = 0.2,
                clip_range_value: float = 0.2, seed: int = 0) -> dict:
    """PPO on a softmax policy over K responses per prompt (X prompts), the toy world's RLHF.

    Each response is one token, so an episode is one step: GAE (gamma = 1) reduces to
    A = R - V(x) with R = r(x, y) - beta * (log pi(y|x) - log pi_ref(y|x)); V is a table with its
    clipped value loss, the advantages are whitened, the ratio clipped, ``ppo_epochs`` Adam passes
    per batch and a learning rate decaying linearly to 0 (so the last iterates stop jittering).

    Args:
        pi_ref: (X, K) or (K,) reference probabilities. reward: same shape.
    Returns:
        {"pi": (X, K) final policy, "history": [(step, max |pi - pi*|)], "pi_star": closed form}
    """
    pi_ref, reward, squeeze = _as_table(pi_ref, reward)
    X, K = pi_ref.shape
    gen = torch.Generator().manual_seed(seed)
    logits = pi_ref.log().clone().requires_grad_(True)  # start at pi_ref, as RLHF starts at SFT
    values = torch.zeros(X, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([logits, values], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / (steps * ppo_epochs))
    pi_star = torch.softmax(pi_ref.log() + reward / beta, dim=-1)
    history = []
    for step in range(steps):
        with torch.no_grad():
            x = torch.randint(X, (batch_size,), generator=gen)
            logp_all = torch.log_softmax(logits, -1)
            y = torch.multinomial(logp_all.exp()[x], 1, generator=gen).squeeze(1)
            old_logps = logp_all[x, y]
            R = reward[x, y] - beta * (old_logps - pi_ref[x, y].log())
            old_v = values[x].clone()
            mask = torch.ones(batch_size, 1, dtype=torch.bool)
            adv, returns = compute_gae(R.unsqueeze(1), old_v.unsqueeze(1), mask, 1.0, 0.95)
            adv = whiten(adv, mask)
        for _ in range(ppo_epochs):
            logps = torch.log_softmax(logits, -1)[x, y].unsqueeze(1)
            pg_loss, _ = ppo_policy_loss(logps, old_logps.unsqueeze(1), adv, mask, clip_range)
            vf_loss = ppo_value_loss(values[x].unsqueeze(1), old_v.unsqueeze(1), returns, mask,
                                     clip_range_value)
            opt.zero_grad()
            (pg_loss + vf_loss).backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            pi = torch.softmax(logits, -1)
            history.append((step, (pi - pi_star).abs().max().item()))
    pi = torch.softmax(logits.detach(), -1)
    return {"pi": pi[0] if squeeze else pi, "history": history,
            "pi_star": pi_star[0] if squeeze else pi_star}


def tabular_rloo(pi_ref, reward, beta: float, steps: int = 300, prompts_per_step: int = 128,
                 k: int = 4, lr: float = 0.05, seed: int = 0) -> dict:
    """RLOO on the toy: k samples per prompt, leave-one-out baseline, one Adam step per batch.

    Args/Returns: as ``tabular_ppo``.
    """
    pi_ref, reward, squeeze = _as_table(pi_ref, reward)
    X, K = pi_ref.shape
    gen = torch.Generator().manual_seed(seed)
    logits = pi_ref.log().clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / steps)
    pi_star = torch.softmax(pi_ref.log() + reward / beta, dim=-1)
    history = []
    for step in range(steps):
        x = torch.randint(X, (prompts_per_step,), generator=gen).repeat_interleave(k)  # (P*k,)
        logp_all = torch.log_softmax(logits, -1)
        with torch.no_grad():
            y = torch.multinomial(logp_all.exp()[x], 1, generator=gen).squeeze(1)
            R = reward[x, y] - beta * (logp_all[x, y] - pi_ref[x, y].log())
            adv = rloo_advantages(R.view(-1, k)).view(-1)
        loss = -(adv * logp_all[x, y]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            pi = torch.softmax(logits, -1)
            history.append((step, (pi - pi_star).abs().max().item()))
    pi = torch.softmax(logits.detach(), -1)
    return {"pi": pi[0] if squeeze else pi, "history": history,
            "pi_star": pi_star[0] if squeeze else pi_star}
