"""Ground-truth rewards: VADER (tiny) and a classifier pipeline (gpt2), the latter on a local model."""

from __future__ import annotations

import math

import pytest
import torch

from helpers.rewards import _positive_negative_labels, classifier_reward_fn, make_reward_fn, vader_reward


def test_vader_ranks_positive_over_negative():
    pos = ["the acting was superb and the music was wonderful!", "a great film. i loved it."]
    neg = ["the acting was terrible and the music was awful.", "a bad film. i hated it."]
    r_pos, r_neg = vader_reward(pos), vader_reward(neg)
    assert len(r_pos) == 2 and all(-1 <= r <= 1 for r in r_pos + r_neg)
    assert min(r_pos) > 0.5 > -0.5 > max(r_neg)
    # negation flips, and "but" weighs the second clause more
    assert vader_reward(["the plot was not good."])[0] < 0 < vader_reward(["the plot was good."])[0]
    assert vader_reward(["the plot was bad, but the acting was great."])[0] > 0
    assert make_reward_fn("vader") is vader_reward


def test_label_lookup():
    assert _positive_negative_labels({0: "NEGATIVE", 1: "POSITIVE"}) == ("POSITIVE", "NEGATIVE")
    assert _positive_negative_labels({0: "positive", 1: "negative"}) == ("positive", "negative")
    assert _positive_negative_labels({0: "LABEL_0", 1: "LABEL_1"}) == ("LABEL_1", "LABEL_0")
    with pytest.raises(ValueError):
        _positive_negative_labels({0: "a", 1: "b", 2: "c"})


def test_classifier_reward_is_positive_log_odds(tiny_tokenizer, tmp_path):
    """The gpt2 profile's reward path (transformers pipeline) on a locally saved tiny classifier:
    reward = logit(POSITIVE) - logit(NEGATIVE), checked against a direct forward pass."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tiny_tokenizer), n_positions=64, n_layer=2, n_head=2, n_embd=32,
                        num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
                        label2id={"NEGATIVE": 0, "POSITIVE": 1}, pad_token_id=tiny_tokenizer.pad_token_id)
    model = GPT2ForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    texts = ["The movie was great.", "The plot was dull, but the music was lovely.", "Not bad."]
    reward_fn = classifier_reward_fn(str(tmp_path), device="cpu", batch_size=2)
    rewards = reward_fn(texts)
    with torch.no_grad():
        expected = []
        for text in texts:
            logits = model(**tiny_tokenizer(text, return_tensors="pt")).logits[0]
            expected.append(float(logits[1] - logits[0]))
    assert all(math.isfinite(r) for r in rewards)
    assert rewards == pytest.approx(expected, abs=1e-4)
