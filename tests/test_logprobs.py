"""Sequence log-probs against a naive per-prefix loop, on a real tiny GPT-2."""

import math

import pytest
import torch

from helpers.data import collate_preferences, tokenize_preferences
from helpers.logprobs import IGNORE_INDEX, concatenated_forward, sequence_logprobs, token_logprobs

RECORDS = [
    {"prompt": "The movie was", "chosen": " great and the acting was superb.", "rejected": " dull."},
    {"prompt": "I did not like", "chosen": " the plot", "rejected": " the ending at all, not at all!"},
    {"prompt": "A wonderful", "chosen": " film.", "rejected": " script"},
]


@pytest.fixture()
def batch(tiny_tokenizer):
    examples = tokenize_preferences(RECORDS, tiny_tokenizer, max_length=64, max_prompt_length=16)
    return examples, collate_preferences(examples, tiny_tokenizer.pad_token_id)


def test_sequence_logprobs_equals_naive_loop(tiny_model, batch, naive_logprob):
    examples, b = batch
    with torch.no_grad():
        logits = tiny_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    got = sequence_logprobs(logits, b["labels"])
    rows = [(ex["prompt_input_ids"], ex["chosen_input_ids"]) for ex in examples]
    rows += [(ex["prompt_input_ids"], ex["rejected_input_ids"]) for ex in examples]
    for r, (prompt_ids, ids) in enumerate(rows):
        expected = naive_logprob(tiny_model, prompt_ids, ids[len(prompt_ids):])
        assert got[r].item() == pytest.approx(expected, abs=1e-4), r


def test_average_is_sum_over_count(tiny_model, batch):
    _, b = batch
    with torch.no_grad():
        logits = tiny_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    n_scored = (b["labels"][:, 1:] != IGNORE_INDEX).sum(-1)
    assert torch.allclose(sequence_logprobs(logits, b["labels"], average=True),
                          sequence_logprobs(logits, b["labels"]) / n_scored)


def test_concatenated_forward_equals_two_forwards(tiny_model, batch):
    examples, b = batch
    with torch.no_grad():
        chosen, rejected = concatenated_forward(tiny_model, b)
    n = len(examples)
    for half, got in ((slice(0, n), chosen), (slice(n, 2 * n), rejected)):
        # each half padded to its own width: a different padding must not change the answer
        sub = {k: v[half] for k, v in b.items()}
        width = int(sub["attention_mask"].sum(-1).max())
        sub = {k: v[:, :width] for k, v in sub.items()}
        with torch.no_grad():
            logits = tiny_model(input_ids=sub["input_ids"], attention_mask=sub["attention_mask"]).logits
        assert torch.allclose(got, sequence_logprobs(logits, sub["labels"]), atol=1e-5)


def test_low_precision_logits_are_upcast():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 50) * 20
    labels = torch.randint(0, 50, (2, 6))
    low = logits.to(torch.bfloat16)
    got = sequence_logprobs(low, labels)
    assert got.dtype == torch.float32
    # exactly the float32 log-softmax of the bf16-rounded logits: no bf16 arithmetic inside
    assert torch.equal(got, sequence_logprobs(low.float(), labels))
    # a log-softmax computed in bf16 itself would be further off
    naive = torch.gather(torch.log_softmax(low[:, :-1], -1), 2, labels[:, 1:, None]).squeeze(2).float().sum(-1)
    exact = sequence_logprobs(low.double(), labels)
    assert (got - exact).abs().max() < (naive - exact).abs().max()


def test_token_logprobs_mask_and_zeros():
    logits = torch.zeros(1, 4, 10)  # uniform: every scored token has log-prob -ln 10
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 5]])
    logps, mask = token_logprobs(logits, labels)
    assert mask.tolist() == [[False, True, True]]
    assert logps[0, 0].item() == 0.0
    assert sequence_logprobs(logits, labels).item() == pytest.approx(-2 * math.log(10), abs=1e-6)


def test_shape_mismatch_and_odd_batch_raise(tiny_model):
    with pytest.raises(ValueError, match="disagree"):
        token_logprobs(torch.zeros(1, 4, 10), torch.zeros(1, 5, dtype=torch.long))
    b = {k: torch.ones(3, 4, dtype=torch.long) for k in ("input_ids", "attention_mask", "labels")}
    with pytest.raises(ValueError, match="even"):
        concatenated_forward(tiny_model, b)
