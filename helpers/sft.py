"""Supervised fine-tuning (SFT): next-token cross-entropy on plain review texts.

The same function makes pi_ref in both profiles: a 1 M-parameter GPT-2 on the synthetic reviews
(``tiny``) and GPT-2 124 M on IMDb (``gpt2``). Each text becomes ``tokens(text) + [EOS]`` (cut to
``max_length``; a cut text carries no EOS), so the model learns *where reviews end* -- without it,
sampled responses run to ``max_new_tokens`` and the EOS rate of later notebooks means nothing.

Batches are right-padded; padding is excluded from the loss through labels = -100 and from
attention through the attention mask, never by comparing ids to the pad id (which may equal EOS).
"""

from __future__ import annotations

import math
import time

import torch

from helpers.config import autocast, get_device
from helpers.data import pad_rows
from helpers.logprobs import IGNORE_INDEX


def tokenize_texts(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """``tokens(text) + [eos]`` for each text, cut to ``max_length`` tokens."""
    eos = tokenizer.eos_token_id
    # truncate while tokenizing (IMDb reviews run to 1000+ tokens); a text of max_length tokens
    # or more then loses its EOS below, as it should: the review did not end there
    ids = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    return [(row + [eos])[:max_length] for row in ids]


def collate_texts(rows: list[list[int]], pad_token_id: int) -> dict:
    """Right-pad token rows into ``input_ids``, ``attention_mask``, ``labels`` (B, T).

    ``labels`` equals ``input_ids`` on real tokens and -100 on padding (the model shifts labels
    by one itself when given ``labels=``).
    """
    input_ids, attention_mask = pad_rows(rows, pad_token_id)  # (B, T)
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _token_loss_sum(model, batch: dict) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over the batch's scored tokens, and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]  # position t predicts token t+1
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((labels != IGNORE_INDEX).sum())


@torch.no_grad()
def evaluate_sft_loss(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 128,
                      device=None) -> float:
    """Mean next-token cross-entropy (nats per token, EOS included) of ``model`` on ``texts``."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = tokenize_texts(tokenizer, texts, max_length)
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = collate_texts(rows[start:start + batch_size], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device):
            loss, n = _token_loss_sum(model, batch)
        total, count = total + float(loss), count + n
    model.train(was_training)
    return total / max(count, 1)


def train_sft(model, tokenizer, texts: list[str], steps: int = 500, batch_size: int = 64,
              lr: float = 2e-3, max_length: int = 64, warmup_frac: float = 0.05,
              weight_decay: float = 0.01, seed: int = 0, eval_texts: list[str] | None = None,
              eval_every: int | None = None, log_every: int = 10, device=None,
              progress: bool = True, eval_batch_size: int = 128) -> dict:
    """Fine-tune ``model`` in place on ``texts`` with AdamW (linear warmup, cosine decay to 10%).

    Batches are drawn uniformly at random (with replacement across steps) from a seeded
    generator, so a run repeats exactly on the same machine.

    Args:
        model: a causal LM (e.g. ``GPT2LMHeadModel``), moved to ``device``.
        tokenizer: its tokenizer (needs ``eos_token_id`` and ``pad_token_id``).
        texts: training texts (whole reviews).
        steps, batch_size, lr, warmup_frac, weight_decay: optimisation.
        max_length: tokens per text, EOS included.
        seed: batch order.
        eval_texts: held-out texts for ``eval_loss`` (at the end, and every ``eval_every`` steps).
        eval_batch_size: texts per forward pass of those evaluations.
        log_every: record the mean training loss of each ``log_every`` steps.
        device: default ``helpers.config.get_device()``.
        progress: show a tqdm bar.
    Returns:
        dict with ``steps`` and ``loss`` (lists: step, mean train loss over the last
        ``log_every`` steps), ``eval_steps`` / ``eval_loss`` (lists), ``final_train_loss``,
        ``final_eval_loss`` (or None), ``seconds``, ``n_params``.
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    model.train()
    rows = tokenize_texts(tokenizer, texts, max_length)
    generator = torch.Generator().manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    warmup = max(1, int(warmup_frac * steps))

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_frac = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_frac))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    history = {"steps": [], "loss": [], "eval_steps": [], "eval_loss": [],
               "n_params": sum(p.numel() for p in model.parameters())}
    start_time, window = time.perf_counter(), []
    bar = tqdm(range(steps), desc="SFT", disable=not progress)
    for step in bar:
        idx = torch.randint(len(rows), (batch_size,), generator=generator).tolist()
        batch = collate_texts([rows[i] for i in idx], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device):
            loss_sum, n = _token_loss_sum(model, batch)
        loss = loss_sum / max(n, 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        window.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            history["steps"].append(step + 1)
            history["loss"].append(sum(window) / len(window))
            bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
            window = []
        if eval_texts and eval_every and (step + 1) % eval_every == 0 and step + 1 != steps:
            history["eval_steps"].append(step + 1)
            history["eval_loss"].append(evaluate_sft_loss(model, tokenizer, eval_texts, max_length, eval_batch_size, device=device))
    bar.close()
    model.eval()
    history["final_train_loss"] = history["loss"][-1] if history["loss"] else None
    history["final_eval_loss"] = None
    if eval_texts:
        history["eval_steps"].append(steps)
        history["eval_loss"].append(evaluate_sft_loss(model, tokenizer, eval_texts, max_length, eval_batch_size, device=device))
        history["final_eval_loss"] = history["eval_loss"][-1]
        # the same measurement on as many *training* texts: train vs held-out, no batch noise
        history["final_train_eval_loss"] = evaluate_sft_loss(
            model, tokenizer, texts[: len(eval_texts)], max_length, eval_batch_size, device=device)
    history["seconds"] = time.perf_counter() - start_time
    return history
