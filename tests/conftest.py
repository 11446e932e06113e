"""Shared fixtures: a tiny real tokenizer and a tiny real GPT-2, built in seconds.

Append new fixtures at the end; several test modules use these.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the hub

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

SENTENCES = [
    "The movie was great and the acting was superb.",
    "The plot was dull, but the music was lovely.",
    "I did not like the ending at all.",
    "A wonderful film with a terrible script.",
    "The pacing was slow and the dialogue was flat!",
    "Not bad, not great: an average evening at the cinema.",
]


def build_tiny_tokenizer(path, vocab_size: int = 300):
    """Train a byte-level BPE on a few sentences, save it, and load it back the standard way."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 5, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>")
    fast.save_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path))


def build_tiny_gpt2(tokenizer, seed: int = 0, n_layer: int = 2, n_embd: int = 32):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_layer=n_layer, n_head=2, n_embd=n_embd,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config).eval()


def naive_response_logprob(model, prompt_ids, response_ids) -> float:
    """log pi(response | prompt) with one forward pass per prefix, in float64: no shifting, no
    masking, no padding -- the independent reference every log-prob test compares against."""
    total, context = 0.0, list(prompt_ids)
    for token in response_ids:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([context])).logits[0, -1]
        total += torch.log_softmax(logits.double(), -1)[token].item()
        context.append(token)
    return total


@pytest.fixture(scope="session")
def naive_logprob():
    """The naive per-prefix log-prob (``naive_response_logprob``) for tests to compare against."""
    return naive_response_logprob


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    return build_tiny_gpt2(tiny_tokenizer)


# --- preference pairs for the training-loop tests (helpers/train.py, scripts/train_dpo.py) ---

TINY_PROMPTS = ["The movie was", "The plot was", "The acting was", "The music was",
                "The ending was", "The script was", "The film was", "The cinema was"]
TINY_GOOD = [" great and lovely.", " superb!", " wonderful.", " not bad."]
TINY_BAD = [" dull and flat.", " terrible.", " slow.", " not great."]


def build_tiny_pairs(n_per_prompt: int = 2) -> list[dict]:
    """8 prompts x n_per_prompt records {prompt, chosen, rejected}: positive words beat negative ones."""
    return [{"prompt": p, "chosen": TINY_GOOD[(i + j) % 4], "rejected": TINY_BAD[(3 * i + j) % 4]}
            for i, p in enumerate(TINY_PROMPTS) for j in range(n_per_prompt)]


@pytest.fixture()
def tiny_pairs():
    return build_tiny_pairs()


# --- a small tiny-profile world (corpus, tokenizer, 2x32 SFT model), built once per session ---

SMALL_WORLD = dict(n_reviews=2_500, split_sizes={"prefs": 200, "test": 200}, vocab_size=800,
                   n_layer=2, n_embd=32, n_head=2, sft_steps=80, sft_batch_size=32, sft_lr=3e-3,
                   max_new_tokens=40)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """``helpers.world.tiny_world`` at test size in a session temp folder, fully built (~15 s)."""
    from helpers.build import build_world
    from helpers.world import tiny_world

    world = tiny_world(tmp_path_factory.mktemp("small_world"), **SMALL_WORLD)
    build_world(world, pairs=False, progress=False)
    return world
