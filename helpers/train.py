"""The DPO training loop, from scratch: one step function shared by the notebooks and the
Accelerate script (``scripts/train_dpo.py``), and a single-process loop around it.

A *step* is one optimizer update. It consumes ``gradient_accumulation_steps`` micro-batches of
``batch_size`` pairs (times the number of processes under Accelerate), so the pairs per update are

    global batch = batch_size * gradient_accumulation_steps * num_processes.

The data order of an epoch is a function of ``(seed, epoch)`` only (``epoch_order``) and an epoch
has ``len(pairs) // global_batch`` steps (an incomplete last step is dropped). That makes the loop
stateless in its data: a resumed run, or a run spread over N processes, sees exactly the pairs the
uninterrupted single-process run sees at every step.

Metrics carry the names TRL users know (``loss``, ``rewards/chosen``, ``rewards/rejected``,
``rewards/accuracies``, ``rewards/margins``, ``logps/chosen``, ``logps/rejected``) plus ``step``,
``epoch``, ``lr``, ``grad_norm``, and ``eval/...`` for whatever the evaluation callback returns.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.config import autocast, seed_everything
from helpers.data import collate_preferences, pad_token_id_of, tokenize_preferences
from helpers.logprobs import concatenated_forward
from helpers.losses import LOSS_TYPES, preference_loss
from helpers.validate import check_bool, check_choice, check_number

# Per-pair statistics, averaged over the pairs of a step; the TRL names.
PAIR_METRICS = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)
CSV_COLUMNS = ("step", "epoch", "lr", *PAIR_METRICS, "grad_norm")
CHECKPOINT_NAME = "checkpoint.pt"
# Config fields that must not change between an interrupted run and its resumption.
RESUME_MUST_MATCH = ("beta", "loss_type", "label_smoothing", "batch_size", "gradient_accumulation_steps",
                     "seed", "max_length", "max_prompt_length", "warmup_steps", "lr", "weight_decay",
                     "max_grad_norm", "disable_dropout")


@dataclass
class DPOConfig:
    """Everything that decides a DPO run (names follow the paper and TRL's DPOConfig)."""

    beta: float = 0.1  # KL-penalty strength: larger keeps pi_theta closer to pi_ref
    loss_type: str = "sigmoid"  # "sigmoid" = DPO (cDPO with label_smoothing > 0), "ipo", "soft" (label probabilities)
    label_smoothing: float = 0.0  # cDPO: probability that a preference label is flipped
    lr: float = 1e-4  # tiny models; the paper used 1e-6 for models of billions of parameters
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up, then constant (as the paper and its reference code)
    max_grad_norm: float | None = 1.0  # None: no clipping (grad_norm is still logged)
    batch_size: int = 8  # pairs per micro-batch (per process)
    gradient_accumulation_steps: int = 1
    max_steps: int | None = None  # optimizer updates; None: ``epochs`` full epochs
    epochs: int = 1
    eval_every: int = 0  # call eval_fn every this many steps and after the last (0: never)
    seed: int = 0
    precompute_ref_logps: bool = False  # score every pair under pi_ref once, then drop the reference
    ref_batch_size: int = 32  # pairs per forward when precomputing reference log-probs
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0  # save every this many steps and after the last (0: only after the last)
    max_length: int = 64  # prompt + response tokens
    max_prompt_length: int = 16
    disable_dropout: bool = True  # as the DPO reference code and TRL: pi_theta = pi_ref exactly at step 0
    metrics_csv: str | None = None  # also write the metrics here (rewritten at checkpoints and at the end)

    def __post_init__(self):
        """Every field checked when the config is made (also by ``dataclasses.replace``)."""
        c, owner = check_number, "DPOConfig"
        c(owner, "beta", self.beta, low=0, low_open=True,
          why="beta <= 0 learns nothing (0) or the reverse preference (< 0)")
        check_choice(owner, "loss_type", self.loss_type, LOSS_TYPES)
        c(owner, "label_smoothing", self.label_smoothing, low=0, high=0.5, high_open=True,
          why="the probability that a label is flipped; at 0.5 the labels carry no information")
        if self.loss_type != "sigmoid" and self.label_smoothing != 0:
            raise ValueError(f"DPOConfig.label_smoothing = {self.label_smoothing!r}: must be 0 with "
                             f"loss_type={self.loss_type!r} (label smoothing is the sigmoid loss's cDPO)")
        c(owner, "lr", self.lr, low=0, low_open=True, why="lr 0 never moves the policy; lr < 0 climbs the loss")
        c(owner, "weight_decay", self.weight_decay, low=0)
        c(owner, "warmup_steps", self.warmup_steps, integer=True, low=0)
        c(owner, "max_grad_norm", self.max_grad_norm, low=0, low_open=True, optional=True,
          why="None turns clipping off; 0 would zero every update")
        c(owner, "batch_size", self.batch_size, integer=True, low=1)
        c(owner, "gradient_accumulation_steps", self.gradient_accumulation_steps, integer=True, low=1)
        c(owner, "max_steps", self.max_steps, integer=True, low=1, optional=True,
          why="None trains for `epochs` epochs")
        c(owner, "epochs", self.epochs, integer=True, low=1)
        c(owner, "eval_every", self.eval_every, integer=True, low=0, why="0: never")
        c(owner, "seed", self.seed, integer=True, low=0)
        c(owner, "ref_batch_size", self.ref_batch_size, integer=True, low=1)
        c(owner, "checkpoint_every", self.checkpoint_every, integer=True, low=0, why="0: only after the last step")
        c(owner, "max_length", self.max_length, integer=True, low=2, why="prompt + response tokens")
        c(owner, "max_prompt_length", self.max_prompt_length, integer=True, low=1, high=self.max_length,
          high_open=True, why="room must be left for the response within max_length")
        for flag in ("precompute_ref_logps", "disable_dropout"):
            check_bool(owner, flag, getattr(self, flag))


def check_fits_model(config: DPOConfig, model) -> None:
    """``config.max_length`` within the model's positions (else an IndexError deep in the forward)."""
    cfg = getattr(model, "config", None)
    positions = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
    if positions is not None and config.max_length > positions:
        raise ValueError(f"DPOConfig.max_length = {config.max_length}: must be <= {positions}, the model's "
                         f"number of positions")


def examples_fingerprint(examples: list[dict]) -> str:
    """A hash of tokenized pairs (prompt, chosen, rejected ids, in order): a resumed run, or reused
    reference log-probs, must be of exactly these pairs -- the same count is not enough."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex["prompt_input_ids"], ex["chosen_input_ids"], ex["rejected_input_ids"]]).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Data order
# --------------------------------------------------------------------------------------------


def epoch_order(num_examples: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of the pairs in one epoch: a function of (seed, epoch) only.

    Its own generator, not the global RNG: dropout, sampling in an evaluation, or a resume cannot
    change which pairs a step sees.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_examples, generator=generator)


def steps_per_epoch(num_examples: int, batch_size: int, gradient_accumulation_steps: int = 1,
                    num_processes: int = 1) -> int:
    """Whole optimizer steps in one pass over the data (an incomplete last step is dropped)."""
    per_step = batch_size * gradient_accumulation_steps * num_processes
    steps = num_examples // per_step
    if steps == 0:
        raise ValueError(f"{num_examples} pairs are fewer than one step's {per_step} "
                         f"(batch_size * gradient_accumulation_steps * num_processes)")
    return steps


def total_steps(config: DPOConfig, num_examples: int, num_processes: int = 1) -> int:
    """``config.max_steps`` if set, else ``config.epochs`` full epochs."""
    if config.max_steps is not None:
        return config.max_steps
    return config.epochs * steps_per_epoch(num_examples, config.batch_size,
                                           config.gradient_accumulation_steps, num_processes)


class EpochSampler(torch.utils.data.Sampler):
    """The indices of ``epoch_order`` cut to whole steps; ``set_epoch`` picks the epoch.

    Used by the Accelerate script: its batch sampler is sharded over processes, micro-batch k
    going to process k % num_processes, so the processes together see what one process sees.
    """

    def __init__(self, num_examples: int, seed: int, per_step: int):
        self.num_examples, self.seed, self.per_step = num_examples, seed, per_step
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.num_examples // self.per_step) * self.per_step

    def __iter__(self):
        return iter(epoch_order(self.num_examples, self.seed, self.epoch)[: len(self)].tolist())


def collate_batch(examples: list[dict], pad_token_id: int) -> dict:
    """``collate_preferences`` plus the pairs' ``index`` and, when present, their reference log-probs.

    Returns:
        input_ids, attention_mask, labels: (2B, T); index: (B,);
        ref_chosen_logps, ref_rejected_logps: (B,) float32 if every example carries them.
    """
    batch = collate_preferences(examples, pad_token_id)
    batch["index"] = torch.tensor([ex.get("index", -1) for ex in examples], dtype=torch.long)
    if all("chosen_prob" in ex for ex in examples):
        batch["chosen_probs"] = torch.tensor([ex["chosen_prob"] for ex in examples], dtype=torch.float32)
    if all("ref_chosen_logps" in ex for ex in examples):
        batch["ref_chosen_logps"] = torch.tensor([ex["ref_chosen_logps"] for ex in examples], dtype=torch.float32)
        batch["ref_rejected_logps"] = torch.tensor([ex["ref_rejected_logps"] for ex in examples],
                                                   dtype=torch.float32)
    return batch


def move_batch(batch: dict, device: torch.device | str) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


# --------------------------------------------------------------------------------------------
# The model side: reference log-probs, losses, one optimizer step
# --------------------------------------------------------------------------------------------


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Set every dropout probability to 0, so train mode computes what eval mode computes."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def freeze_reference(ref_model: torch.nn.Module) -> torch.nn.Module:
    """pi_ref is a constant: eval mode (dropout off) and no gradients."""
    ref_model.eval()
    ref_model.requires_grad_(False)
    return ref_model


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def compute_ref_batch_logps(ref_model: torch.nn.Module, batch: dict, autocast_ctx: Callable | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi_ref(y_w|x), log pi_ref(y_l|x) of a collated batch: (B,) float32 each, no graph."""
    device = _device_of(ref_model)
    ctx = autocast_ctx() if autocast_ctx is not None else autocast(device)
    with torch.no_grad(), ctx:
        chosen, rejected = concatenated_forward(ref_model, move_batch(batch, device))
    return chosen.float(), rejected.float()


def compute_ref_logps(ref_model: torch.nn.Module, examples: list[dict], pad_token_id: int,
                      batch_size: int = 32, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Score every tokenized pair under the reference once, in order.

    Args:
        ref_model: pi_ref (put in eval mode here).
        examples: tokenized pairs (``helpers.data.tokenize_preferences``), N of them.
        pad_token_id: the tokenizer's pad id.
        batch_size: pairs per forward pass.
    Returns:
        ref_chosen_logps, ref_rejected_logps: (N,) float32 on the CPU.
    """
    freeze_reference(ref_model)
    chosen, rejected = [], []
    starts = range(0, len(examples), batch_size)
    for start in tqdm(starts, desc="reference log-probs", disable=not progress, leave=False):
        batch = collate_preferences(examples[start:start + batch_size], pad_token_id)
        c, r = compute_ref_batch_logps(ref_model, batch)
        chosen.append(c.cpu())
        rejected.append(r.cpu())
    return torch.cat(chosen), torch.cat(rejected)


def compute_dpo_losses(policy: torch.nn.Module, batch: dict, config: DPOConfig,
                       ref_model: torch.nn.Module | None = None, autocast_ctx: Callable | None = None
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair DPO (or IPO) losses of one collated batch, and per-pair statistics.

    The reference log-probs come from ``batch["ref_chosen_logps"]`` (precomputed) when present,
    else from a no-grad forward of ``ref_model``.

    Args:
        policy: pi_theta, in train mode.
        batch: from ``collate_batch``: input_ids/attention_mask/labels (2B, T), maybe ref logps (B,).
        config: beta, loss_type, label_smoothing.
        ref_model: pi_ref, needed unless the batch carries reference log-probs.
        autocast_ctx: a zero-argument context-manager factory (Accelerate's ``accelerator.autocast``);
            default ``helpers.config.autocast`` (bf16 on CUDA, nothing on CPU).
    Returns:
        losses: (B,) with a graph to the policy's parameters.
        stats: the PAIR_METRICS names -> (B,) detached float32 tensors.
    """
    device = _device_of(policy)
    batch = move_batch(batch, device)
    if "ref_chosen_logps" in batch:
        ref_chosen_logps, ref_rejected_logps = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
    elif ref_model is not None:
        ref_chosen_logps, ref_rejected_logps = (t.to(device) for t in
                                                compute_ref_batch_logps(ref_model, batch, autocast_ctx))
    else:
        raise ValueError("no reference: pass ref_model or precompute the reference log-probs")
    ctx = autocast_ctx() if autocast_ctx is not None else autocast(device)
    with ctx:
        policy_chosen_logps, policy_rejected_logps = concatenated_forward(policy, batch)  # (B,) float32
    losses, chosen_rewards, rejected_rewards = preference_loss(
        config.loss_type, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
        beta=config.beta, label_smoothing=config.label_smoothing, chosen_probs=batch.get("chosen_probs"))
    stats = {
        "loss": losses.detach().float(),
        "rewards/chosen": chosen_rewards.float(),
        "rewards/rejected": rejected_rewards.float(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
        "rewards/margins": (chosen_rewards - rejected_rewards).float(),
        "logps/chosen": policy_chosen_logps.detach().float(),
        "logps/rejected": policy_rejected_logps.detach().float(),
    }
    return losses, stats


def summarize_pair_stats(stats_list: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Mean of each per-pair statistic over all pairs of a step (all micro-batches, all processes)."""
    return {name: torch.cat([s[name].flatten().cpu() for s in stats_list]).mean().item() for name in PAIR_METRICS}


def warmup_lambda(step: int, warmup_steps: int) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup_steps`` updates, then constant.

    ``(step + 1) / (warmup_steps + 1)`` as in the DPO reference code, so the first update is not
    wasted at lr = 0.
    """
    return min(1.0, (step + 1) / (warmup_steps + 1))


def build_optimizer(policy: torch.nn.Module, config: DPOConfig):
    """AdamW over the trainable parameters and the warm-up schedule (a LambdaLR)."""
    params = [p for p in policy.parameters() if p.requires_grad]
    # The fused kernel is ~10x faster than the default on CPU (GPT-2 124M: 0.25 s vs 4 s a step)
    # and is the fast path on CUDA too; other devices (MPS on older torch) get the default.
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(warmup_lambda, warmup_steps=config.warmup_steps))
    return optimizer, scheduler


def dpo_train_step(policy: torch.nn.Module, micro_batches: list[dict], optimizer, scheduler, config: DPOConfig,
                   ref_model: torch.nn.Module | None = None, accelerator=None) -> dict[str, float]:
    """One optimizer update over ``gradient_accumulation_steps`` micro-batches.

    Single process (``accelerator=None``): each micro-batch's mean loss is divided by the number of
    micro-batches, so the accumulated gradient is that of the mean over all the step's pairs.
    Under Accelerate: ``accelerator.accumulate`` skips the gradient all-reduce until the last
    micro-batch, ``accelerator.backward`` does the division, DDP averages over processes, and
    ``gather_for_metrics`` collects every process's per-pair statistics.

    Returns:
        the step's metrics: PAIR_METRICS means over all its pairs, ``lr`` (used by this update),
        ``grad_norm`` (before clipping).
    """
    policy.train()
    lr = optimizer.param_groups[0]["lr"]
    stats_list, grad_norm, synced = [], None, False
    n_micro = len(micro_batches)
    max_norm = config.max_grad_norm if config.max_grad_norm is not None else math.inf
    for micro_batch in micro_batches:
        if accelerator is None:
            losses, stats = compute_dpo_losses(policy, micro_batch, config, ref_model)
            (losses.mean() / n_micro).backward()
            stats_list.append(stats)
            continue
        with accelerator.accumulate(policy):
            losses, stats = compute_dpo_losses(policy, micro_batch, config, ref_model,
                                               autocast_ctx=accelerator.autocast)
            accelerator.backward(losses.mean())
            if accelerator.sync_gradients:
                synced = True
                # None under DeepSpeed, which clips inside its engine (logged as nan)
                grad_norm = accelerator.clip_grad_norm_(policy.parameters(), max_norm)
                optimizer.step()
                scheduler.step()  # a plain step: the Accelerator is built with step_scheduler_with_optimizer=False
            optimizer.zero_grad(set_to_none=True)
        stats_list.append(accelerator.gather_for_metrics(stats))
    if accelerator is None:
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    elif not synced:
        raise RuntimeError("gradient_accumulation_steps of the Accelerator and of the config disagree")
    metrics = summarize_pair_stats(stats_list)
    metrics["lr"] = lr
    metrics["grad_norm"] = math.nan if grad_norm is None else float(grad_norm)
    return metrics


# --------------------------------------------------------------------------------------------
# Metrics files, RNG states, checkpoints
# --------------------------------------------------------------------------------------------


def write_metrics_csv(records: list[dict], path: str | os.PathLike) -> Path:
    """One row per record; CSV_COLUMNS first, then any other key (e.g. ``eval/...``) sorted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = sorted({k for r in records for k in r} - set(CSV_COLUMNS))
    columns = [c for c in CSV_COLUMNS if any(c in r for r in records)] + extra
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for record in records:
            writer.writerow({k: ("" if record.get(k) is None else record.get(k)) for k in columns})
    os.replace(tmp, path)  # a disconnect mid-write leaves the previous file, not half a file
    return path


def read_metrics_csv(path: str | os.PathLike) -> list[dict]:
    """The records ``write_metrics_csv`` wrote: ``step``/``epoch`` as int, the rest as float (empty cells dropped)."""
    records = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            record = {}
            for k, v in row.items():
                if v == "":
                    continue
                record[k] = int(v) if k in ("step", "epoch") else float(v)
            records.append(record)
    return records


def get_rng_states() -> dict:
    """Every RNG state, as tensors and plain Python values only, so that the checkpoint loads with
    ``torch.load(weights_only=True)`` (no pickled objects: a checkpoint cannot run code)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"python": random.getstate(),
              "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: str | os.PathLike, policy, optimizer, scheduler, state: dict) -> Path:
    """Everything a resumed run needs, written atomically (a Colab disconnect mid-save keeps the last one).

    ``state`` holds step, epoch, data_order, metrics, config, ref_logps (or None).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"policy": policy.state_dict(), "optimizer": optimizer.state_dict(),
               "scheduler": scheduler.state_dict(), "rng": get_rng_states(), **state}
    payload["digest"] = state_digest(payload)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def state_digest(obj) -> str:
    """SHA-256 of a checkpoint's contents (every tensor's bytes, every key and plain value).

    ``torch.load`` does not notice a flipped byte inside a tensor: it loads different weights and a
    resumed run silently diverges. Stored in the checkpoint and checked on load.
    """
    h = hashlib.sha256()

    def walk(x):
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=repr):
                if k != "digest":
                    h.update(repr(k).encode())
                    walk(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                walk(v)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    walk(obj)
    return h.hexdigest()


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint written by ``save_checkpoint``, refused by path if its contents changed."""
    # weights_only: tensors and plain Python values only (get_rng_states stores NumPy's state as a tensor)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("digest") != state_digest(state):
        raise ValueError(f"the checkpoint {path} is damaged (its contents do not match the digest saved with "
                         f"it); delete it to start over")
    return state


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def train_dpo(
    policy: torch.nn.Module,
    ref_model: torch.nn.Module | Callable[[], torch.nn.Module] | None,
    tokenizer,
    train_pairs,
    config: DPOConfig,
    eval_fn: Callable[[torch.nn.Module], dict] | None = None,
    callback: Callable[[dict], None] | None = None,
    ref_logps: tuple[torch.Tensor, torch.Tensor] | None = None,
    resume: bool = True,
    progress: bool = True,
) -> list[dict]:
    """Train ``policy`` with DPO on preference records; return one metrics dict per step.

    Args:
        policy: pi_theta, initialised by the caller from the SFT model; trained in place.
        ref_model: pi_ref (the SFT model, a separate copy), frozen here; or a zero-argument
            function that loads it, so that with ``precompute_ref_logps`` the reference lives only
            while its log-probs are computed and is then freed; or None when ``ref_logps`` is given.
        tokenizer: tokenizes the records (``eos_token_id`` and ``pad_token_id`` are used).
        train_pairs: records ``{"prompt", "chosen", "rejected"}`` (a list or a ``datasets.Dataset``).
        config: a ``DPOConfig``.
        eval_fn: called as ``eval_fn(policy)`` (policy in eval mode, under its own RNG so that
            evaluating does not change training) every ``config.eval_every`` steps and after the last;
            its scalar results are logged as ``eval/<name>``, the rest ignored. E.g.
            ``functools.partial(evaluate_policy, ref_model=ref, tokenizer=tok, prompts=held_out,
            reward_fn=reward_fn, progress=False)`` logs ``eval/reward_mean``, ``eval/kl_mean``, ...
        callback: called with each step's metrics dict (live plots; raising stops the run).
        ref_logps: precomputed (ref_chosen_logps, ref_rejected_logps), (N,) each, in record order.
        resume: continue from ``config.checkpoint_dir``'s checkpoint when there is one.
        progress: show a tqdm bar with the live loss and accuracy.
    Returns:
        a list of dicts with ``step``, ``epoch``, ``lr``, the PAIR_METRICS, ``grad_norm`` and any
        ``eval/...`` entries; also written to ``config.metrics_csv`` when set.
    """
    pad_token_id = pad_token_id_of(tokenizer)
    examples = tokenize_preferences(train_pairs, tokenizer, config.max_length, config.max_prompt_length)
    for i, ex in enumerate(examples):
        ex["index"] = i
    if config.loss_type == "soft":  # the label probabilities travel with the tokenized pairs (same order)
        missing = [i for i, record in enumerate(train_pairs) if "chosen_prob" not in record]
        if missing:
            raise ValueError(f"loss_type 'soft': record {missing[0]} has no field 'chosen_prob' "
                             f"({len(missing)} records lack it; helpers.pairs.annotate_pairs adds it)")
        for ex, record in zip(examples, train_pairs):
            ex["chosen_prob"] = float(record["chosen_prob"])
    n = len(examples)
    data_fp = examples_fingerprint(examples)
    spe = steps_per_epoch(n, config.batch_size, config.gradient_accumulation_steps)
    n_steps = total_steps(config, n)
    check_fits_model(config, policy)

    if config.disable_dropout:
        disable_dropout(policy)
    optimizer, scheduler = build_optimizer(policy, config)
    checkpoint_path = Path(config.checkpoint_dir) / CHECKPOINT_NAME if config.checkpoint_dir else None

    # Fresh start or resume.
    start_step, metrics, data_order, order_epoch = 0, [], None, -1
    state = None
    if resume and checkpoint_path is not None and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        mismatched = [f"{k}: {state['config'].get(k)!r} -> {getattr(config, k)!r}" for k in RESUME_MUST_MATCH
                      if state["config"].get(k) != getattr(config, k)]
        if state["num_examples"] != n:
            mismatched.append(f"number of pairs: {state['num_examples']} -> {n}")
        elif state.get("data_fingerprint") != data_fp:
            mismatched.append("the pairs (same number, other data)")
        if mismatched:
            raise ValueError(f"the checkpoint in {config.checkpoint_dir} is of another run "
                             f"({'; '.join(mismatched)}); use a new checkpoint_dir")
        policy.load_state_dict(state["policy"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step, metrics = state["step"], list(state["metrics"])
        data_order, order_epoch = state["data_order"], state["epoch"]
        if state.get("ref_logps") is not None and ref_logps is None:
            ref_logps = state["ref_logps"]
    else:
        seed_everything(config.seed)

    # The reference: precomputed once (then dropped), or held frozen and run every step.
    held_ref = None
    if config.precompute_ref_logps or ref_logps is not None:
        if ref_logps is None:
            model = ref_model() if (callable(ref_model) and not isinstance(ref_model, torch.nn.Module)) else ref_model
            if model is None:
                raise ValueError("precompute_ref_logps needs ref_model (or ref_logps)")
            ref_logps = compute_ref_logps(model, examples, pad_token_id, config.ref_batch_size, progress=progress)
            del model  # with a loader, this was the only reference to pi_ref: its memory is freed here
        ref_chosen, ref_rejected = (torch.as_tensor(t, dtype=torch.float32).cpu() for t in ref_logps)
        if ref_chosen.shape != (n,) or ref_rejected.shape != (n,):
            raise ValueError(f"ref_logps must be two ({n},) tensors, got {tuple(ref_chosen.shape)}")
        for i, ex in enumerate(examples):
            ex["ref_chosen_logps"], ex["ref_rejected_logps"] = ref_chosen[i].item(), ref_rejected[i].item()
        ref_logps = (ref_chosen, ref_rejected)
    else:
        if ref_model is None:
            raise ValueError("pass ref_model, or set precompute_ref_logps / ref_logps")
        held_ref = ref_model() if (callable(ref_model) and not isinstance(ref_model, torch.nn.Module)) else ref_model
        freeze_reference(held_ref)
    if state is not None:
        set_rng_states(state["rng"])  # last: everything above may have drawn random numbers
        del state

    bar = tqdm(total=n_steps, initial=start_step, desc="DPO", disable=not progress)
    micro = config.batch_size
    try:
        for step in range(start_step, n_steps):
            epoch, k = divmod(step, spe)
            if epoch != order_epoch:
                data_order, order_epoch = epoch_order(n, config.seed, epoch), epoch
            first = k * config.gradient_accumulation_steps * micro
            micro_batches = [
                collate_batch([examples[i] for i in data_order[first + j * micro: first + (j + 1) * micro].tolist()],
                              pad_token_id)
                for j in range(config.gradient_accumulation_steps)]
            record = {"step": step + 1, "epoch": epoch}
            record.update(dpo_train_step(policy, micro_batches, optimizer, scheduler, config, held_ref))
            if not (math.isfinite(record["loss"]) and math.isfinite(record["grad_norm"])):
                # an infinite gradient norm clips every gradient to NaN: nothing would be learned, silently
                raise FloatingPointError(
                    f"step {step + 1}: loss {record['loss']}, gradient norm {record['grad_norm']}: the run cannot go on "
                    f"(beta = {config.beta:g}, lr = {config.lr:g}; a huge beta or lr overflows the logits)")
            done = step + 1
            if eval_fn is not None and config.eval_every and (done % config.eval_every == 0 or done == n_steps):
                record.update(_run_eval(eval_fn, policy))
            metrics.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['rewards/accuracies']:.2f}")
            if checkpoint_path is not None and (
                    done == n_steps or (config.checkpoint_every and done % config.checkpoint_every == 0)):
                save_checkpoint(checkpoint_path, policy, optimizer, scheduler, {
                    "step": done, "epoch": order_epoch, "data_order": data_order, "metrics": metrics,
                    "config": asdict(config), "num_examples": n, "data_fingerprint": data_fp,
                    "ref_logps": ref_logps})
                if config.metrics_csv:
                    write_metrics_csv(metrics, config.metrics_csv)
            if callback is not None:
                callback(record)
    finally:
        bar.close()
    policy.eval()
    if config.metrics_csv and metrics:
        write_metrics_csv(metrics, config.metrics_csv)
    return metrics


def _run_eval(eval_fn, policy) -> dict:
    """``evaluate_forked``, its scalar results logged as ``eval/<name>``."""
    result = evaluate_forked(eval_fn, policy)
    # Scalars only: evaluate_policy also returns per-sample arrays, which belong in a notebook cell,
    # not in a per-step metrics row.
    logged = {}
    for k, v in (result or {}).items():
        if torch.is_tensor(v) or isinstance(v, np.ndarray):
            if v.ndim != 0:
                continue
            v = v.item()
        if isinstance(v, (bool, int, float, np.integer, np.floating)):
            logged[k if "/" in k else f"eval/{k}"] = float(v)
    return logged


def evaluate_forked(eval_fn, policy):
    """``eval_fn(policy)`` in eval mode under a forked RNG: sampling in the evaluation leaves training's
    RNG alone; the policy goes back to train mode."""
    policy.eval()
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            result = eval_fn(policy)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        policy.train()
    return result
