"""What every checker shares: the verdict, running the reader's function, comparisons, shared test cases."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: ``ok`` and a one-line ``message``; truthy iff ok.

    A pass says only that every case matched: the committed output of a hidden solution cell is
    visible before the learner opens it, so it must not state the answer. What the answer is
    (``detail``) is kept for whoever asks for it, e.g. ``print(checks.check_kl_divergence(f).detail)``.
    """

    ok: bool
    message: str
    detail: str = ""

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return self.message

    def __str__(self) -> str:
        return self.message


PASS_MESSAGE = "✓ {name}: correct -- every case matches."


def _pass(name: str, what: str) -> Verdict:
    return Verdict(True, PASS_MESSAGE.format(name=name), detail=what)


def _fail(name: str, why: str) -> Verdict:
    return Verdict(False, f"✗ {name}: {why}")


class _Stop(Exception):
    """Carries a failing Verdict out of a nested helper."""

    def __init__(self, verdict: Verdict):
        super().__init__(verdict.message)
        self.verdict = verdict


def _call(name: str, fn, *args, hint: str = ""):
    """Call the reader's function and return what it returned, or stop with a verdict if it raised
    (``hint`` is added to the message of an exception)."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise _Stop(_fail(name, "not implemented yet -- replace `raise NotImplementedError` with your code.")) from None
    except Exception as exc:  # the reader's code may fail in any way; report it, do not crash the notebook
        raise _Stop(_fail(name, f"raised {type(exc).__name__}: {exc}{hint}")) from None


def _run(name: str, fn, *args) -> torch.Tensor:
    """Call the reader's function; turn its result into a float64 tensor or stop with a verdict."""
    out = _call(name, fn, *args)
    if isinstance(out, tuple):  # e.g. a dpo_loss that also returns the rewards
        out = out[0]
    try:
        return torch.as_tensor(out.detach() if torch.is_tensor(out) else out, dtype=torch.float64)
    except Exception:
        raise _Stop(_fail(name, f"returned {type(out).__name__}, expected a tensor of numbers.")) from None


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5, equal_nan: bool = False) -> bool:
    """Same shape and values; nan/inf never match unless ``equal_nan`` (for diagnosing wrong answers)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape:
        return False
    if not equal_nan:
        return bool(torch.isfinite(a).all()) and torch.allclose(a, b, rtol=tol, atol=tol)
    same_nonfinite = (~torch.isfinite(a) & ~torch.isfinite(b) & ((a == b) | (a.isnan() & b.isnan())))
    finite_close = torch.isclose(a, b, rtol=tol, atol=tol)
    return bool((same_nonfinite | finite_close).all())


def _compare(name: str, got: torch.Tensor, expected: torch.Tensor, wrongs, context: str, tol: float = 1e-5):
    """Stop with a diagnosis unless ``got`` matches ``expected``.

    Args:
        wrongs: [(value_of_a_typical_wrong_answer, explanation)], tried in order.
        context: the inputs, in words, for the generic message.
    """
    if _close(got, expected, tol):
        return
    for value, why in wrongs:
        if _close(got, value, tol, equal_nan=True):
            raise _Stop(_fail(name, why))
    if got.shape != expected.shape:
        raise _Stop(_fail(name, f"returned shape {tuple(got.shape)}, expected {tuple(expected.shape)} ({context})."))
    if not torch.isfinite(got).all():
        raise _Stop(_fail(name, f"returned inf or nan ({context}): something overflows; "
                                "compute in log space (logsumexp / logsigmoid / log_softmax)."))
    i = int((got - expected).abs().flatten().argmax())
    raise _Stop(_fail(name, f"wrong value ({context}): got {got.flatten()[i].item():.4g} where "
                            f"{expected.flatten()[i].item():.4g} is expected."))


def _checker(fn):
    """Turn a _Stop raised inside a checker body into its Verdict."""

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _Stop as stop:
            return stop.verdict

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


def _t(values, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def _lm_case(seed: int, batch: int, width: int, vocab: int, dtype=torch.float32):
    """Random logits (B, T, V) and labels (B, T) with a masked prompt and right padding."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, width, vocab, generator=g) * 3).to(dtype)
    labels = torch.randint(0, vocab, (batch, width), generator=g)
    for b in range(batch):  # prompt of 2-3 tokens, then response, then padding
        prompt = 2 + b % 2
        length = width - b
        labels[b, :prompt] = -100
        labels[b, length:] = -100
    return logits, labels


def _tiny_lm(seed: int, vocab: int = 23):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=16, n_layer=1, n_head=2, n_embd=16, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(config)


def _pair_batch(seed: int, n_pairs: int = 3, vocab: int = 23):
    from helpers.data import collate_preferences

    g = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(n_pairs):
        prompt = torch.randint(1, vocab, (2 + i % 2,), generator=g).tolist()
        ex = {"prompt_input_ids": prompt}
        for name, n in (("chosen", 2 + i), ("rejected", 4 - i % 3)):
            resp = torch.randint(1, vocab, (n,), generator=g).tolist() + [0]
            ex[f"{name}_input_ids"] = prompt + resp
            ex[f"{name}_labels"] = [-100] * len(prompt) + resp
        examples.append(ex)
    return collate_preferences(examples, pad_token_id=0)


def _seq_logps_variant(logits, labels, shift=True, average=False, normalise=True, mask=True):
    """A sequence log-prob with one of the typical mistakes switched on (float64)."""
    logits = logits.double()
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    keep = labels != -100
    logps = F.log_softmax(logits, -1) if normalise else logits
    per_token = torch.gather(logps, 2, labels.clamp(min=0).unsqueeze(2)).squeeze(2)
    if mask:
        per_token = per_token * keep
    total = per_token.sum(-1)
    return total / keep.sum(-1).clamp(min=1) if average else total
