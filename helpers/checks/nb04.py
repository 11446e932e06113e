"""Checkers of notebook 04 (sequence log-probs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helpers.checks._core import (
    Verdict,
    _call,
    _checker,
    _close,
    _compare,
    _fail,
    _lm_case,
    _pass,
    _run,
    _seq_logps_variant,
    _Stop,
)


@_checker
def check_sequence_logprobs(fn) -> Verdict:
    """Exercise (04): ``sequence_logprobs(logits, labels)`` -> (B,) log pi(y|x): shift by one, log-softmax in
    float32, gather the label's log-prob, zero where the label is -100, sum over tokens."""
    name = "sequence_logprobs"
    cases = [(*_lm_case(0, 3, 7, 11), "3 rows of 7 tokens, vocabulary 11, prompt and padding labelled -100"),
             (*_lm_case(1, 2, 9, 50), "2 rows of 9 tokens, vocabulary 50")]
    for logits, labels, context in cases:
        got = _run(name, fn, logits.clone(), labels.clone())
        expected = _seq_logps_variant(logits, labels)
        if got.shape == labels[:, 1:].shape or got.shape == labels.shape:
            raise _Stop(_fail(name, "returned per-token log-probs; sum them over the tokens of each row, shape (B,)."))
        no_shift = logits.double()
        wrongs = [
            (_seq_logps_variant(logits, labels, shift=False),
             "no shift: the logits at position t predict token t + 1, so compare logits[:, :-1] with labels[:, 1:]."),
            (_seq_logps_variant(no_shift[:, 1:], labels[:, :-1], shift=False),
             "shifted the wrong way: logits[:, :-1] (positions 0..T-2) predict labels[:, 1:] (tokens 1..T-1)."),
            (_seq_logps_variant(logits, labels, average=True),
             "you averaged over tokens; DPO sums them: log pi(y|x) = sum_t log pi(y_t | x, y_<t)."),
            (_seq_logps_variant(logits, labels, normalise=False),
             "you gathered raw logits; apply log_softmax over the vocabulary first."),
            (_seq_logps_variant(logits, labels, mask=False),
             "the -100 positions are scored too: zero them with the mask labels != -100 after the gather."),
        ]
        _compare(name, got, expected, wrongs, context, tol=1e-4)
    low, labels = _lm_case(2, 2, 8, 40)
    low = (low * 8).to(torch.bfloat16)
    got = _run(name, fn, low.clone(), labels.clone())
    if not _close(got, _seq_logps_variant(low.float(), labels), 1e-4):
        in_bf16 = torch.gather(F.log_softmax(low[:, :-1], -1), 2, labels[:, 1:].clamp(min=0).unsqueeze(2)).squeeze(2)
        if _close(got, (in_bf16.double() * (labels[:, 1:] != -100)).sum(-1), 1e-4):
            raise _Stop(_fail(name, "bf16 logits were log-softmaxed in bf16 (2-3 significant digits); "
                                    "upcast with logits.float() first."))
        raise _Stop(_fail(name, "wrong value for bf16 logits: upcast with logits.float() before the log-softmax."))
    return _pass(name, "shifted, normalised in float32, masked, summed -- one log pi(y|x) per row.")


def _labels_case(prompt_length: int, length: int, width: int, pad: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 30, (width,), generator=g)
    ids[length - 1] = pad  # the EOS, with pad = eos
    ids[length:] = pad
    return ids


@_checker
def check_response_labels(fn) -> Verdict:
    """Exercise (04): ``response_labels(input_ids, prompt_length, length)`` -> (T,) labels: the token id on the
    response and its EOS (positions prompt_length .. length-1), -100 on the prompt and on the padding.
    Here pad = eos (GPT-2 has no pad token)."""
    name = "response_labels"
    eos = 0
    cases = [(3, 8, 11, 1, "3 prompt tokens, 4 response tokens + EOS, 3 pads (pad = eos = 0)"),
             (2, 5, 5, 2, "2 prompt tokens, 2 response tokens + EOS, no padding"),
             (4, 6, 9, 3, "4 prompt tokens, 1 response token + EOS, 3 pads")]
    for prompt_length, length, width, seed, context in cases:
        ids = _labels_case(prompt_length, length, width, eos, seed)
        try:
            out = _call(name, fn, ids.clone(), prompt_length, length)
        except _Stop as stop:
            return stop.verdict
        got = torch.as_tensor(out).long()
        pos = torch.arange(width)
        expected = torch.where((pos >= prompt_length) & (pos < length), ids, torch.full_like(ids, -100))
        if got.shape != expected.shape:
            return _fail(name, f"returned shape {tuple(got.shape)}, expected ({width},) -- one label per input token "
                               "(the shift happens later, in sequence_logprobs).")
        if torch.equal(got, expected):
            continue
        by_pad = torch.where((pos >= prompt_length) & (ids != eos), ids, torch.full_like(ids, -100))
        wrongs = [
            (by_pad, "the EOS is masked: you decided what counts by comparing ids with the pad id, and pad = eos. "
                     "Use the lengths (positions < length), so the EOS is still scored and the model learns to stop."),
            (torch.where(pos < length, ids, torch.full_like(ids, -100)),
             "the prompt is scored: log pi(y|x) counts the response only; set the first prompt_length labels to -100."),
            (torch.where(pos >= prompt_length, ids, torch.full_like(ids, -100)),
             "the padding is scored: set every label from position `length` on to -100."),
            (torch.where((pos >= prompt_length + 1) & (pos < length), ids, torch.full_like(ids, -100)),
             "off by one: the first response token (position prompt_length) is masked."),
            (torch.where((pos >= prompt_length - 1) & (pos < length), ids, torch.full_like(ids, -100)),
             "off by one: the last prompt token is scored."),
            (torch.where((pos >= prompt_length) & (pos < length - 1), ids, torch.full_like(ids, -100)),
             "the EOS is masked: it is the last real token (position length - 1) and must be scored."),
            (torch.cat([expected[1:], torch.tensor([-100])]),
             "the labels are already shifted; keep them aligned with input_ids -- sequence_logprobs shifts."),
        ]
        for value, why in wrongs:
            if torch.equal(got, value):
                return _fail(name, why)
        return _fail(name, f"wrong labels ({context}): got {got.tolist()}, expected {expected.tolist()}.")
    return _pass(name, "response and EOS scored, prompt and padding -100, decided by lengths not by the pad id.")
