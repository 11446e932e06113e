"""The reward model: last-token readout, encoding, pair construction, Bradley-Terry training on a
learnable synthetic preference, evaluation, save/load -- with tiny real GPT-2 models."""

from __future__ import annotations

import math
import random

import pytest
import torch
from conftest import build_tiny_gpt2

from helpers import reward_model as rm
from helpers.losses import bradley_terry_loss

POSITIVE = ["great", "superb", "lovely", "wonderful", "brilliant"]
NEGATIVE = ["dull", "terrible", "flat", "awful", "boring"]
ASPECTS = ["movie", "acting", "plot", "music", "ending", "script", "pacing", "cast"]


def synthetic_pairs(n, seed, aspects=ASPECTS):
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        a, b = rng.choice(aspects), rng.choice(aspects)
        pairs.append({"prompt": "", "chosen": f"the {a} was {rng.choice(POSITIVE)}.",
                      "rejected": f"the {b} was {rng.choice(NEGATIVE)}."})
    return pairs


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a busy 2-core machine: several torch threads spin against each other (a
    training step was measured ~10x slower with 2 threads than with 1 under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def model(tiny_tokenizer):
    return rm.build_reward_model(vocab_size=len(tiny_tokenizer), pad_token_id=tiny_tokenizer.pad_token_id,
                                 n_layer=2, n_embd=32, seed=0)


def test_last_token_index_right_and_left_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert rm.last_token_index(right).tolist() == [2, 4, 0]
    assert rm.last_token_index(left).tolist() == [4, 4, 4]


def test_encode_texts_appends_eos_pads_right_and_keeps_the_end(tiny_tokenizer):
    tok = tiny_tokenizer
    batch = rm.encode_texts(tok, ["the movie was great.", "a wonderful film with a terrible script."], max_length=64)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    n0 = len(tok("the movie was great.", add_special_tokens=False)["input_ids"])
    assert mask[0].sum().item() == n0 + 1
    assert ids[0, n0].item() == tok.eos_token_id
    assert (ids[0, n0 + 1:] == tok.pad_token_id).all() and (mask[0, n0 + 1:] == 0).all()
    assert ids[1, mask[1].sum() - 1].item() == tok.eos_token_id
    short = rm.encode_texts(tok, ["a wonderful film with a terrible script."], max_length=4)
    full = tok("a wonderful film with a terrible script.", add_special_tokens=False)["input_ids"]
    assert short["input_ids"][0].tolist() == full[-3:] + [tok.eos_token_id]


def test_score_is_the_head_on_the_last_real_token_and_ignores_padding(model, tiny_tokenizer):
    texts = ["the plot was dull, but the music was lovely.", "not bad."]
    batch = rm.encode_texts(tiny_tokenizer, texts)
    with torch.no_grad():
        scores = model(**batch)
        # independent computation: run each text alone (no padding at all), take the last position
        for k, text in enumerate(texts):
            alone = rm.encode_texts(tiny_tokenizer, [text])
            hidden = model.backbone(**alone).last_hidden_state[0, -1]
            expected = hidden @ model.head.weight[0] + model.head.bias[0]
            assert scores[k].item() == pytest.approx(expected.item(), abs=1e-5)
    assert scores.shape == (2,) and scores.dtype == torch.float32
    assert torch.allclose(rm.score_texts(model, tiny_tokenizer, texts, batch_size=1), scores, atol=1e-5)


def test_make_review_pairs_ranks_by_reward_skips_ties_and_is_seeded():
    texts = [f"review {i}" for i in range(50)]
    rewards = [((i * 37) % 50) / 50 for i in range(50)]
    rewards[3] = rewards[4] = 0.5  # an exact tie
    pairs = rm.make_review_pairs(texts, rewards, 200, seed=1, min_gap=0.05)
    assert len(pairs) == 200
    for p in pairs:
        assert p["chosen_reward"] - p["rejected_reward"] >= 0.05
        assert rewards[texts.index(p["chosen"])] == p["chosen_reward"]
        assert p["prompt"] == ""
    assert pairs == rm.make_review_pairs(texts, rewards, 200, seed=1, min_gap=0.05)
    assert pairs != rm.make_review_pairs(texts, rewards, 200, seed=2, min_gap=0.05)
    with pytest.raises(ValueError):
        rm.make_review_pairs(texts, rewards[:-1], 10)
    with pytest.raises(ValueError):
        rm.make_review_pairs(["a", "b"], [0.0, 0.01], 5, min_gap=0.05)


def test_score_pairs_batch_matches_separate_scoring(model, tiny_tokenizer):
    pairs = synthetic_pairs(4, seed=0)
    pairs[1]["prompt"] = "review:"
    with torch.no_grad():
        c, r = rm.score_pairs_batch(model, tiny_tokenizer, pairs)
    c2 = rm.score_texts(model, tiny_tokenizer, [p["prompt"] + p["chosen"] for p in pairs])
    r2 = rm.score_texts(model, tiny_tokenizer, [p["prompt"] + p["rejected"] for p in pairs])
    assert torch.allclose(c, c2, atol=1e-5) and torch.allclose(r, r2, atol=1e-5)


def test_training_learns_a_preference_and_generalises(model, tiny_tokenizer):
    train = synthetic_pairs(400, seed=0, aspects=ASPECTS[:6])
    test = synthetic_pairs(100, seed=1, aspects=ASPECTS[6:])  # aspects never seen in training
    before = rm.evaluate_pairs(model, tiny_tokenizer, test)
    assert before["loss"] == pytest.approx(math.log(2), abs=0.3)  # an untrained head: near chance
    history = rm.train_reward_model(model, tiny_tokenizer, train, steps=80, batch_size=16, lr=3e-3, log_every=10)
    assert len(history["loss"]) == 8 and history["step"][-1] == 80 and history["seconds"] > 0
    assert history["loss"][-1] < history["loss"][0]
    after = rm.evaluate_pairs(model, tiny_tokenizer, test)
    assert after["accuracy"] >= 0.95
    assert after["loss"] < 0.3
    # evaluate_pairs' numbers are the ones its scores imply
    c, r = after["chosen_scores"], after["rejected_scores"]
    assert after["accuracy"] == pytest.approx((c > r).float().mean().item())
    assert after["loss"] == pytest.approx(bradley_terry_loss(c, r).mean().item(), rel=1e-5)
    assert not model.training


def test_training_is_reproducible(tiny_tokenizer):
    pairs = synthetic_pairs(64, seed=0)
    out = []
    for _ in range(2):
        m = rm.build_reward_model(vocab_size=len(tiny_tokenizer), pad_token_id=tiny_tokenizer.pad_token_id,
                                  n_layer=2, n_embd=32, seed=3)
        h = rm.train_reward_model(m, tiny_tokenizer, pairs, steps=5, batch_size=8, seed=3, log_every=1)
        out.append((h["loss"], rm.score_texts(m, tiny_tokenizer, ["the cast was great."])))
    assert out[0][0] == out[1][0]
    assert torch.equal(out[0][1], out[1][1])


def test_save_load_round_trip(model, tiny_tokenizer, tmp_path):
    texts = ["the movie was great.", "the plot was dull."]
    before = rm.score_texts(model, tiny_tokenizer, texts)
    rm.save_reward_model(model, tmp_path / "rm", tokenizer=tiny_tokenizer, info={"accuracy": 0.5})
    loaded = rm.load_reward_model(tmp_path / "rm", device="cpu")
    assert torch.allclose(rm.score_texts(loaded, tiny_tokenizer, texts), before, atol=1e-6)
    assert (tmp_path / "rm" / "info.json").exists() and (tmp_path / "rm" / "tokenizer").is_dir()


def test_backbone_from_a_saved_language_model(tiny_tokenizer, tmp_path):
    lm = build_tiny_gpt2(tiny_tokenizer, seed=5)
    lm.save_pretrained(tmp_path / "lm")
    model = rm.build_reward_model(backbone=tmp_path / "lm", seed=0)
    assert torch.equal(model.backbone.wte.weight, lm.transformer.wte.weight)
    assert torch.equal(model.backbone.h[0].attn.c_attn.weight, lm.transformer.h[0].attn.c_attn.weight)


def test_fresh_backbone_needs_a_vocabulary():
    with pytest.raises(ValueError):
        rm.build_reward_model()


def test_torch_threads_sets_and_restores(tiny_tokenizer):
    torch.set_num_threads(2)  # (the autouse fixture restores the original count afterwards)
    n = torch.get_num_threads()
    assert n == 2
    with rm.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == n
    with rm.torch_threads(None):
        assert torch.get_num_threads() == n
    m = rm.build_reward_model(vocab_size=len(tiny_tokenizer), pad_token_id=tiny_tokenizer.pad_token_id,
                              n_layer=1, n_embd=16)
    seen = []
    m.register_forward_hook(lambda *args: seen.append(torch.get_num_threads()))
    rm.train_reward_model(m, tiny_tokenizer, synthetic_pairs(8, seed=0), steps=2, batch_size=4)
    assert seen == [1, 1]  # trained on one thread (cpu_threads=1 by default) ...
    assert torch.get_num_threads() == n  # ... and the count restored
    rm.score_texts(m, tiny_tokenizer, ["the cast was great."], cpu_threads=None)
    assert seen[-1] == 2
