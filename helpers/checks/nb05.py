"""Checkers of notebook 05 (the SFT reference)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helpers.checks._core import Verdict, _call, _checker, _compare, _fail, _pass, _run, _Stop
from helpers.pairs import count_pairs


@_checker
def check_sft_loss(fn) -> Verdict:
    """Exercise (05): ``sft_loss(logits, input_ids, attention_mask)`` -> scalar mean next-token cross-entropy over
    the real tokens (padding excluded), in nats per token."""
    name = "sft_loss"
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 6, 13, generator=g) * 2
    input_ids = torch.randint(0, 13, (3, 6), generator=g)
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    input_ids = input_ids.masked_fill(attention_mask == 0, 1)  # pad id 1
    got = _run(name, fn, logits.clone(), input_ids.clone(), attention_mask.clone())
    lp = F.log_softmax(logits.double(), -1)
    nll = -torch.gather(lp[:, :-1], 2, input_ids[:, 1:, None]).squeeze(2)  # (B, T-1)
    keep = attention_mask[:, 1:].bool()
    expected = nll[keep].mean()
    nll_ns = -torch.gather(lp, 2, input_ids[:, :, None]).squeeze(2)
    row_means = torch.stack([nll[b][keep[b]].mean() for b in range(3)]).mean()
    wrongs = [
        (nll_ns[attention_mask.bool()].mean(), "no shift: the logits at position t predict token t + 1 "
                                               "(compare logits[:, :-1] with input_ids[:, 1:])."),
        (nll.mean(), "the padding is in the loss: average only where attention_mask[:, 1:] == 1."),
        (nll[keep].sum(), "you summed; return the mean over the real tokens (nats per token)."),
        (row_means, "you averaged each row, then the rows: short rows count as much as long ones; "
                    "average over all real tokens of the batch at once."),
        (-expected, "wrong sign: cross-entropy is -log p, positive."),
    ]
    if got.numel() != 1:
        return _fail(name, f"returned shape {tuple(got.shape)}; return one number (the mean over real tokens).")
    _compare(name, got.reshape(()), expected, [(w.reshape(()), why) for w, why in wrongs],
             "3 rows with 6, 4 and 3 real tokens", tol=1e-4)
    return _pass(name, "shifted, padding excluded, mean over all real tokens of the batch.")


@_checker
def check_make_pairs(fn) -> Verdict:
    """Exercise (05): ``make_pairs(prompt, responses, rewards)`` -> list of {"prompt", "chosen", "rejected"}: every
    pair of samples with different rewards, chosen = the higher reward; ties dropped."""
    name = "make_pairs"
    cases = [
        ("the film", [" was great.", " was dull.", " was fine."], [0.8, -0.4, 0.2], "3 samples, rewards 0.8, -0.4, 0.2"),
        ("a nurse", [" smiles.", " cries.", " waits.", " sings."], [0.3, -0.3, 0.0, 0.3], "4 samples, one tie"),
    ]
    for prompt, responses, rewards, context in cases:
        try:
            out = _call(name, fn, prompt, list(responses), list(rewards))
        except _Stop as stop:
            return stop.verdict
        try:
            got = {(r["prompt"], r["chosen"], r["rejected"]) for r in out}
            n_got = len(list(out))
        except Exception:
            return _fail(name, "return a list of dicts with keys 'prompt', 'chosen', 'rejected'.")
        expected, swapped, with_ties = set(), set(), set()
        for i in range(len(responses)):
            for j in range(i + 1, len(responses)):
                hi, lo = (i, j) if rewards[i] > rewards[j] else (j, i)
                if rewards[i] == rewards[j]:
                    with_ties.add((prompt, responses[hi], responses[lo]))
                    continue
                expected.add((prompt, responses[hi], responses[lo]))
                swapped.add((prompt, responses[lo], responses[hi]))
        if got == expected and n_got == len(expected):
            continue
        if got == swapped:
            return _fail(name, "chosen and rejected are swapped: chosen is the response with the higher reward.")
        if got == expected | with_ties:
            return _fail(name, "ties are kept: two responses with equal reward carry no preference; drop the pair.")
        if got < expected:
            return _fail(name, f"only {len(got)} of the {len(expected)} pairs ({context}); pair every two samples "
                               "(itertools.combinations), not only the best with the worst.")
        if n_got != len(got):
            return _fail(name, "some pairs appear twice; each unordered pair of samples once.")
        return _fail(name, f"wrong pairs ({context}): got {sorted(got)}, expected {sorted(expected)}.")
    return _pass(name, "all k(k-1)/2 pairs, higher reward chosen, ties dropped.")


@_checker
def check_count_pairs(fn) -> Verdict:
    """Exercise (05): ``count_pairs(rewards)`` -> how many preference pairs k samples with these rewards
    give: k(k-1)/2 minus the tied pairs, sum over reward values of C(n_v, 2) -- counted, not enumerated."""
    name = "count_pairs"
    cases = [([0.8, -0.4, 0.2], "3 different rewards"), ([0.3, -0.3, 0.0, 0.3], "4 samples, two share 0.3"),
             ([0.5] * 4, "4 samples, all tied"), ([0.1, 0.1, 0.1, 0.2, 0.2, 0.9], "6 samples: three tied, two tied"),
             ([float(v % 7) for v in range(500)], "500 samples over 7 values")]
    for rewards, context in cases:
        got = _call(name, fn, list(rewards))
        try:
            got = int(got)
        except Exception:
            raise _Stop(_fail(name, f"returned {type(got).__name__}; return the number of pairs, an int.")) from None
        k = len(rewards)
        expected = count_pairs(rewards)
        if got == expected:
            continue
        from collections import Counter

        counts = Counter(rewards).values()
        if got == k * (k - 1) // 2:
            return _fail(name, f"{context}: {got} counts every two samples; tied samples (same reward) give no pair.")
        if got == k * (k - 1) // 2 - sum(n - 1 for n in counts):
            return _fail(name, f"{context}: {got}: n samples sharing a reward make C(n, 2) = n(n-1)/2 tied pairs, "
                               "not n - 1.")
        if got == k * (k - 1) - sum(n * (n - 1) for n in counts):
            return _fail(name, f"{context}: {got} counts each pair twice (ordered); a pair is unordered: divide by 2.")
        return _fail(name, f"{context}: got {got}, expected {expected}.")
    return _pass(name, "k(k-1)/2 minus C(n, 2) for every group of n tied rewards, even for 500 samples.")
