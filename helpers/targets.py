"""Training to a *target*: the k sampled responses of each prompt, and what the policy is fitted to.

DPO's loss is minimised by pi*_beta = pi_ref * exp(r / beta) / Z only when its labels are what its
derivation assumes: Bradley-Terry coin flips, P(y_i > y_j) = sigmoid((r_i - r_j) / tau). With
*certain* labels (chosen = the higher reward, as ``helpers.pairs`` makes them) the likelihood is
maximised by infinite margins and the KL term stops holding the policy back (notebook 03). This
module trains one policy from the same samples -- k responses per prompt from pi_ref, scored by the
ground truth -- against each of ``TARGETS``:

    hard        every untied pair of a prompt, chosen = higher reward, p = 1        (the course's pairs)
    bt-sampled  every pair, its label drawn once from a Bradley-Terry annotator     (p in {0, 1})
    soft        every pair, p = sigmoid((r_i - r_j) / tau), the annotator's expected label
    listwise    the prompt's k implicit rewards as one softmax, fitted to softmax(r / tau)
    distilled   NLL of the k samples weighted by softmax(r / (tau beta)): pi*'s own weights

The first three are ``helpers.losses.soft_dpo_loss`` on pairs (a certain or sampled label is p = 1
or 0); the last two are ``listwise_dpo_loss`` and ``distillation_loss``. With tau = 1 all of them
but ``hard`` have the population minimiser pi*_beta.

A step takes ``prompts_per_step`` prompts with all their responses: each response is scored once
per step (B prompts x k rows), however many pairs it is part of. The data order is
``helpers.train.epoch_order`` (a function of the seed and the epoch only), the optimizer and warm-up
``helpers.train.build_optimizer``; ``eval_steps`` evaluates the policy along the way, so a run is a
*path* on the reward-KL plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from helpers.data import pad_rows, pad_token_id_of, text_ids
from helpers.logprobs import IGNORE_INDEX, sequence_logprobs
from helpers.losses import distillation_loss, listwise_dpo_loss, soft_dpo_loss
from helpers.pairs import bradley_terry_label_prob
from helpers.train import build_optimizer, disable_dropout, epoch_order, evaluate_forked, freeze_reference
from helpers.validate import check_choice, check_number

TARGETS = ("hard", "bt-sampled", "soft", "listwise", "distilled")
PAIR_TARGETS = ("hard", "bt-sampled", "soft")


@dataclass
class TargetConfig:
    """One run of ``train_on_target``. beta, lr, warm-up and clipping mean what they mean in
    ``helpers.train.DPOConfig``."""

    target: str = "soft"  # one of TARGETS
    beta: float = 0.1
    tau: float = 1.0  # the annotator's temperature: P(y_i > y_j) = sigmoid((r_i - r_j) / tau)
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_grad_norm: float = 1.0
    prompts_per_step: int = 4  # prompts per update, each with all its k responses
    max_steps: int = 300
    seed: int = 0  # data order, and the annotator's coin flips for bt-sampled
    max_length: int = 64
    max_prompt_length: int = 16

    def __post_init__(self):
        owner = "TargetConfig"
        check_choice(owner, "target", self.target, TARGETS)
        check_number(owner, "beta", self.beta, low=0, low_open=True)
        check_number(owner, "tau", self.tau, low=0, low_open=True, why="the annotator's temperature")
        check_number(owner, "lr", self.lr, low=0, low_open=True)
        check_number(owner, "weight_decay", self.weight_decay, low=0)
        check_number(owner, "warmup_steps", self.warmup_steps, integer=True, low=0)
        check_number(owner, "max_grad_norm", self.max_grad_norm, low=0, low_open=True)
        check_number(owner, "prompts_per_step", self.prompts_per_step, integer=True, low=1)
        check_number(owner, "max_steps", self.max_steps, integer=True, low=1)
        check_number(owner, "seed", self.seed, integer=True, low=0)
        check_number(owner, "max_length", self.max_length, integer=True, low=2)
        check_number(owner, "max_prompt_length", self.max_prompt_length, integer=True, low=1,
                     high=self.max_length, high_open=True)


# --------------------------------------------------------------------------------------------
# groups: one prompt, its k responses and their rewards


def groups_from_samples(samples: dict, rewards, drop_truncated: bool = True) -> tuple[list[dict], dict]:
    """``helpers.evaluate.sample_policy``'s output (prompt-major) as one group per prompt.

    Samples cut at ``max_new_tokens`` (``drop_truncated``) and empty responses are dropped and
    counted, as ``helpers.pairs.build_preference_pairs`` drops them; a prompt left with fewer than
    two responses has no comparison to offer and is dropped (counted).

    Returns:
        (groups: dicts with ``prompt``, ``responses``, ``rewards``, ``ended``;
         counts: ``n_samples``, ``n_truncated``, ``n_empty``, ``n_groups``, ``n_small_groups``)
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    by_prompt: dict[int, dict] = {}
    counts = {"n_samples": len(rewards), "n_truncated": 0, "n_empty": 0, "n_small_groups": 0}
    for i, (p, prompt, response, ended) in enumerate(zip(samples["prompt_index"], samples["prompt"],
                                                         samples["response"], samples["ended"])):
        g = by_prompt.setdefault(p, {"prompt": prompt, "responses": [], "rewards": [], "ended": []})
        if not ended:
            counts["n_truncated"] += 1
            if drop_truncated:
                continue
        if not response.strip():
            counts["n_empty"] += 1
            continue
        g["responses"].append(response)
        g["rewards"].append(float(rewards[i]))
        g["ended"].append(bool(ended))
    groups = []
    for p in sorted(by_prompt):
        if len(by_prompt[p]["responses"]) < 2:
            counts["n_small_groups"] += 1
            continue
        groups.append(by_prompt[p])
    counts["n_groups"] = len(groups)
    return groups, counts


def pair_targets(rewards, target: str, tau: float = 1.0, rng: np.random.Generator | None = None
                 ) -> list[tuple[int, int, float]]:
    """The pairs of one group and the probability that the first response is preferred.

    hard: untied pairs, (higher, lower, 1.0); ties carry no certain label and are dropped.
    soft: every pair, (i, j, sigmoid((r_i - r_j) / tau)); a tie is p = 0.5.
    bt-sampled: every pair, (i, j, 1.0 or 0.0) drawn once from that probability with ``rng``.
    """
    check_choice("pair_targets", "target", target, PAIR_TARGETS)
    if target == "bt-sampled" and rng is None:
        raise ValueError("pair_targets: target 'bt-sampled' needs rng (the annotator's coin flips)")
    out = []
    r = [float(x) for x in rewards]
    for i in range(len(r)):
        for j in range(i + 1, len(r)):
            gap = r[i] - r[j]
            if target == "hard":
                if gap != 0:
                    out.append((i, j, 1.0) if gap > 0 else (j, i, 1.0))
                continue
            p = bradley_terry_label_prob(gap, tau)
            out.append((i, j, p) if target == "soft" else (i, j, float(rng.random() < p)))
    return out


def tokenize_groups(groups: list[dict], tokenizer, config: TargetConfig) -> list[dict]:
    """Each group's rows (prompt + response + EOS where it ended, prompt labelled -100) and, for a
    pair target, its pairs (``pair_targets``; bt-sampled labels drawn once here, from ``config.seed``).

    Truncation as ``helpers.data.tokenize_preference``: the prompt keeps its last
    ``max_prompt_length`` tokens, each response is cut to fit ``max_length``.
    """
    eos = tokenizer.eos_token_id
    rng = np.random.default_rng(config.seed + 7_919)  # the annotator's own stream, not the data order's
    out = []
    for g_index, g in enumerate(groups):
        prompt_ids = text_ids(tokenizer, g["prompt"])[-config.max_prompt_length:]
        if not prompt_ids:
            raise ValueError(f"group {g_index}: field 'prompt' has no tokens")
        budget = config.max_length - len(prompt_ids)
        ids, labels = [], []
        for response, ended in zip(g["responses"], g.get("ended", [True] * len(g["responses"]))):
            response_ids = (text_ids(tokenizer, response) + ([eos] if ended else []))[:budget]
            ids.append(prompt_ids + response_ids)
            labels.append([IGNORE_INDEX] * len(prompt_ids) + response_ids)
        example = {"input_ids": ids, "labels": labels, "rewards": list(map(float, g["rewards"]))}
        if config.target in PAIR_TARGETS:
            example["pairs"] = pair_targets(g["rewards"], config.target, config.tau, rng)
        out.append(example)
    return out


def collate_groups(examples: list[dict], pad_token_id: int) -> dict:
    """B groups -> one right-padded batch of all their rows.

    Returns:
        input_ids, attention_mask, labels: (N, T), N = all responses of the B groups;
        slots: (N,) long, the row's place g * K + i in a (B, K) table, K = the largest group;
        rewards, mask: (B, K); pairs: (P, 3) float (first, second as slot indices, p) when present.
    """
    k = max(len(ex["input_ids"]) for ex in examples)
    rows, labs, slots, pairs = [], [], [], []
    rewards = torch.zeros(len(examples), k, dtype=torch.float64)
    mask = torch.zeros(len(examples), k, dtype=torch.bool)
    for g, ex in enumerate(examples):
        n = len(ex["input_ids"])
        rows += ex["input_ids"]
        labs += ex["labels"]
        slots += [g * k + i for i in range(n)]
        rewards[g, :n] = torch.tensor(ex["rewards"], dtype=torch.float64)
        mask[g, :n] = True
        pairs += [(g * k + i, g * k + j, p) for i, j, p in ex.get("pairs", [])]
    input_ids, attention_mask = pad_rows(rows, pad_token_id)  # (N, T)
    labels, _ = pad_rows(labs, IGNORE_INDEX)  # (N, T)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
             "slots": torch.tensor(slots, dtype=torch.long), "rewards": rewards, "mask": mask}
    if any("pairs" in ex for ex in examples):
        batch["pairs"] = torch.tensor(pairs, dtype=torch.float64).reshape(-1, 3)
    return batch


def group_logps(model, batch: dict) -> torch.Tensor:
    """log pi(y_i | x) of every row, laid out as the (B, K) table (0 where ``mask`` is False)."""
    device = next(model.parameters()).device
    logits = model(input_ids=batch["input_ids"].to(device),
                   attention_mask=batch["attention_mask"].to(device)).logits  # (N, T, V)
    logps = sequence_logprobs(logits, batch["labels"].to(device))  # (N,) float32
    b, k = batch["mask"].shape
    table = torch.zeros(b * k, dtype=logps.dtype, device=device)
    return table.index_put((batch["slots"].to(device),), logps).reshape(b, k)  # (B, K)


def target_losses(config: TargetConfig, policy_logps: torch.Tensor, ref_logps: torch.Tensor, batch: dict
                  ) -> torch.Tensor:
    """The loss terms of one batch: one per pair (pair targets) or one per prompt (listwise, distilled)."""
    device = policy_logps.device
    mask = batch["mask"].to(device)
    rewards = batch["rewards"].to(device=device, dtype=policy_logps.dtype)
    if config.target in PAIR_TARGETS:
        pairs = batch["pairs"].to(device)
        first, second, p = pairs[:, 0].long(), pairs[:, 1].long(), pairs[:, 2].to(policy_logps.dtype)
        pol, ref = policy_logps.reshape(-1), ref_logps.reshape(-1)
        losses, _, _ = soft_dpo_loss(pol[first], pol[second], ref[first], ref[second], config.beta, p)
        return losses
    if config.target == "listwise":
        return listwise_dpo_loss(policy_logps, ref_logps, rewards, config.beta, config.tau, mask)
    return distillation_loss(policy_logps, rewards, config.tau * config.beta, mask)


@torch.no_grad()
def reference_logps(ref_model, examples: list[dict], pad_token_id: int, groups_per_batch: int = 32
                    ) -> list[torch.Tensor]:
    """log pi_ref of every response of every group, once: a list of (k_g,) float32 CPU tensors."""
    freeze_reference(ref_model)
    out = []
    for start in range(0, len(examples), groups_per_batch):
        chunk = examples[start:start + groups_per_batch]
        batch = collate_groups(chunk, pad_token_id)
        table = group_logps(ref_model, batch).float().cpu()
        out += [table[g, :len(ex["input_ids"])] for g, ex in enumerate(chunk)]
    return out


def train_on_target(policy, ref_model, tokenizer, groups: list[dict], config: TargetConfig,
                    eval_fn=None, eval_steps=(), progress: bool = True) -> dict:
    """Fit ``policy`` (initialised from pi_ref by the caller, trained in place) to ``config.target``.

    Args:
        ref_model: pi_ref (frozen here); its log-probs are computed once before training.
        groups: from ``groups_from_samples``.
        eval_fn: ``eval_fn(policy) -> dict``, called after each step in ``eval_steps`` (0: before the
            first), in eval mode under a forked RNG (``helpers.train.evaluate_forked``): evaluating
            does not change training.
    Returns:
        dict: ``history`` (one dict per step: step, loss, grad_norm, lr), ``path`` (one dict per
        evaluation: step and the eval_fn's results), ``n_groups``, ``n_terms`` (pairs or prompts
        per epoch).
    """
    from tqdm.auto import tqdm

    from helpers.config import seed_everything

    pad = pad_token_id_of(tokenizer)
    examples = tokenize_groups(groups, tokenizer, config)
    ref = reference_logps(ref_model, examples, pad)
    for ex, r in zip(examples, ref):
        ex["ref_logps"] = r
    n = len(examples)
    steps_per_epoch = n // config.prompts_per_step
    if steps_per_epoch == 0:
        raise ValueError(f"{n} groups are fewer than one step's {config.prompts_per_step} (prompts_per_step)")
    seed_everything(config.seed)
    disable_dropout(policy)
    optimizer, scheduler = build_optimizer(policy, config)
    eval_steps = sorted(set(int(s) for s in eval_steps))
    path, history = [], []
    if eval_fn is not None and 0 in eval_steps:
        path.append({"step": 0, **evaluate_forked(eval_fn, policy)})
    order, order_epoch = None, -1
    bar = tqdm(total=config.max_steps, desc=f"target {config.target}", disable=not progress)
    try:
        for step in range(config.max_steps):
            epoch, k = divmod(step, steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = epoch_order(n, config.seed, epoch), epoch
            chunk = [examples[i] for i in order[k * config.prompts_per_step:(k + 1) * config.prompts_per_step]]
            batch = collate_groups(chunk, pad)
            policy.train()
            policy_logps = group_logps(policy, batch)  # (B, K)
            ref_logps = torch.zeros_like(policy_logps)
            for g, ex in enumerate(chunk):
                ref_logps[g, :len(ex["ref_logps"])] = ex["ref_logps"].to(ref_logps.device)
            loss = target_losses(config, policy_logps, ref_logps, batch).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"step {step + 1}: the {config.target} loss is {loss.item()}")
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            history.append({"step": step + 1, "epoch": epoch, "loss": loss.item(), "grad_norm": float(grad_norm),
                            "lr": lr})
            if eval_fn is not None and step + 1 in eval_steps:
                path.append({"step": step + 1, **evaluate_forked(eval_fn, policy)})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    finally:
        bar.close()
    policy.eval()
    n_terms = sum(len(ex["pairs"]) for ex in examples) if config.target in PAIR_TARGETS else n
    return {"history": history, "path": path, "n_groups": n, "n_terms": n_terms}
