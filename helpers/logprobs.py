"""Log-probabilities of responses under a causal language model.

A causal LM's logits at position t predict the token at t + 1, so the labels are shifted left by
one against the logits. Labels are -100 wherever a token must not be scored (the prompt and the
padding); the response tokens and the EOS that ends each response are scored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log pi(label_t | tokens_<t), zero where the label is ignored.

    Args:
        logits: (B, T, V) model outputs, any float dtype (upcast to float32 here: bf16 and fp16
            log-softmax over a 50k vocabulary loses several digits, fp16 can overflow).
        labels: (B, T) token ids, IGNORE_INDEX (-100) where not scored.
    Returns:
        logps: (B, T-1) per-token log-probs of labels[:, 1:], 0 where masked.
        mask: (B, T-1) bool, True where a token is scored.
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on (B, T)")
    logits = logits[:, :-1, :].float()  # (B, T-1, V): position t predicts token t+1
    labels = labels[:, 1:]  # (B, T-1)
    mask = labels != IGNORE_INDEX
    safe_labels = labels.masked_fill(~mask, 0)  # gather needs a valid index; masked out below
    logps = torch.gather(F.log_softmax(logits, dim=-1), 2, safe_labels.unsqueeze(2)).squeeze(2)
    return logps * mask, mask


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor, average: bool = False) -> torch.Tensor:
    """log pi(y | x) summed over the scored tokens of each row (mean if ``average``).

    DPO (the paper and its reference implementation) uses the *sum*: it is the log-probability of
    the whole response, the quantity the derivation is about. Averaging per token (as IPO in TRL
    and SimPO do) removes the length dependence but changes the implicit reward's scale.

    Args:
        logits: (B, T, V).
        labels: (B, T), -100 where ignored.
        average: divide by the number of scored tokens instead of summing.
    Returns:
        (B,) float32.
    """
    logps, mask = token_logprobs(logits, labels)
    total = logps.sum(-1)
    if average:
        return total / mask.sum(-1).clamp(min=1)
    return total


def concatenated_forward(model, batch: dict, average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Score chosen and rejected responses in one forward pass over the stacked (2B, T) batch.

    One pass instead of two halves the kernel launches and lets the model see a larger batch; the
    results are identical to two separate forwards (tested).

    Args:
        model: a causal LM returning ``.logits``.
        batch: ``input_ids``, ``attention_mask``, ``labels``, each (2B, T), chosen rows first
            (what ``helpers.data.collate_preferences`` returns).
        average: per-token mean instead of sum (see ``sequence_logprobs``).
    Returns:
        chosen_logps, rejected_logps: (B,) each.
    """
    input_ids = batch["input_ids"]
    if input_ids.shape[0] % 2:
        raise ValueError("a concatenated batch has an even number of rows: B chosen, then B rejected")
    logits = model(input_ids=input_ids, attention_mask=batch["attention_mask"]).logits  # (2B, T, V)
    logps = sequence_logprobs(logits, batch["labels"], average=average)  # (2B,)
    n = input_ids.shape[0] // 2
    return logps[:n], logps[n:]
