"""Stand-ins for what the ``gpt2`` profile loads from the Hugging Face Hub, placed where the hub's
own caches would hold them -- so the ``gpt2`` profile's real loading calls
(``AutoTokenizer.from_pretrained("gpt2")``, ``AutoModelForCausalLM.from_pretrained("gpt2")``,
``load_dataset("stanfordnlp/imdb")``, ``pipeline(model="lvwerra/distilbert-imdb")``) run offline
(``HF_HUB_OFFLINE=1``) exactly as they do on a lab machine prepared by
``python -m helpers.build download --profile gpt2``.

What each stand-in keeps of the real artifact, and what it shrinks:

* ``gpt2`` -- GPT-2's *real* tokenizer (50,257 BPE tokens, EOS 50256, no pad token), rebuilt from
  the ``gpt2.tiktoken`` file that the ``openai-whisper`` package ships (read as a file, the package
  is never imported); a GPT-2-architecture causal LM with that vocabulary and a small width/depth
  (random weights). Saved like the hub repo: ``config.json``, ``model.safetensors``,
  ``generation_config.json``, ``tokenizer.json``, ``tokenizer_config.json``.
* ``stanfordnlp/imdb`` -- splits ``train``/``test``/``unsupervised``, columns ``text``/``label``
  (``ClassLabel(neg, pos)``, ``-1`` in ``unsupervised``), ``<br />`` line breaks, reviews long enough
  to be truncated at 128 tokens; the texts are the course's generated reviews, glued into long
  ones of one leaning (VADER's sign), labelled by it. Written as the datasets cache that a real download leaves
  (``stanfordnlp___imdb/plain_text/0.0.0/<commit>/imdb-<split>.arrow``).
* ``lvwerra/distilbert-imdb`` -- a small DistilBERT sequence classifier with labels
  ``NEGATIVE``/``POSITIVE`` and a WordPiece tokenizer, trained for a few seconds on the stand-in
  IMDb's labels (so its log-odds mean something).

Run ``python tests/gpt2_standins.py HF_HOME`` to build them by hand.
"""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import sys
from pathlib import Path

# GPT-2's pre-tokenizer regex (from its encoder.py / tiktoken's "gpt2" encoding)
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOS = "<|endoftext|>"
# fixed fake commit hashes, so the layout is the hub's: refs/main -> snapshots/<commit>/
COMMIT = {"gpt2": "607a30d783dfa663caf39e06633721c8d4cfcd7e",
          "lvwerra/distilbert-imdb": "20b8bd1c7e6d6c24e1ab3bd0a1b3b2bcb44ccf9b",
          "stanfordnlp/imdb": "e6281661ce1c48d982bc483cf8a173c1bbeb5d31"}
SIZES = dict(train=1_500, test=600, unsupervised=1_000, lm=dict(n_layer=2, n_embd=64, n_head=2),
             clf=dict(dim=64, n_layers=2, n_heads=2, hidden_dim=128, steps=200))


def gpt2_tiktoken_path() -> Path:
    """``whisper/assets/gpt2.tiktoken`` of the installed ``openai-whisper``, found without importing it."""
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("openai-whisper is not installed (pip install --no-deps openai-whisper): "
                                "its assets/gpt2.tiktoken is GPT-2's BPE")
    path = Path(list(spec.submodule_search_locations)[0]) / "assets" / "gpt2.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing from the openai-whisper install")
    return path


def gpt2_tokenizer():
    """GPT-2's tokenizer, rebuilt offline: "Hello world" -> [15496, 995], 50,257 tokens, no pad."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(vocab_file=str(gpt2_tiktoken_path()), pattern=GPT2_PATTERN,
                                additional_special_tokens=[EOS]).converted()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                  model_max_length=1024)
    assert tok("Hello world")["input_ids"] == [15496, 995], "not GPT-2's BPE"
    assert len(tok) == 50_257 and tok.eos_token_id == 50_256 and tok.pad_token is None
    return tok


def _snapshot(hf_home: Path, repo_id: str, repo_type: str = "model") -> Path:
    """``hub/<models|datasets>--owner--name/snapshots/<commit>/`` with ``refs/main`` pointing at it."""
    repo = hf_home / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT[repo_id])
    snap = repo / "snapshots" / COMMIT[repo_id]
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def write_gpt2(hf_home: Path, tokenizer) -> None:
    """The ``gpt2`` repo: GPT-2's tokenizer + a small random GPT-2-architecture LM on its vocabulary."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    snap = _snapshot(hf_home, "gpt2")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=1024, bos_token_id=50_256,
                        eos_token_id=50_256, **SIZES["lm"])
    GPT2LMHeadModel(config).save_pretrained(snap)
    tokenizer.save_pretrained(snap)
    # the hub repo's tokenizer_config.json names no class: AutoTokenizer picks GPT-2's from config.json
    cfg_path = snap / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("tokenizer_class", None)
    cfg_path.write_text(json.dumps(cfg, indent=2))


def imdb_texts(seed: int = 0) -> dict[str, list[dict]]:
    """IMDb-shaped records: long reviews of one leaning (3-12 generated reviews of the same VADER
    sign, at most one of the other, joined by ``<br /><br />``), labelled by that leaning."""
    from helpers.corpus import generate_reviews
    from helpers.rewards import vader_reward

    rng = random.Random(seed)
    need = {s: SIZES[s] for s in ("train", "test", "unsupervised")}
    pool = generate_reviews(16 * sum(need.values()), seed=seed)
    scores = vader_reward(pool)
    by_sign = {1: [t for t, v in zip(pool, scores) if v > 0.3], 0: [t for t, v in zip(pool, scores) if v < -0.3]}
    out = {}
    for split, n in need.items():
        records = []
        for _ in range(n):
            label = rng.randint(0, 1)
            parts = [by_sign[label].pop() for _ in range(rng.randint(3, 12))]
            if rng.random() < 0.3:  # a dissenting sentence, as real reviews have
                parts.insert(rng.randrange(len(parts)), by_sign[1 - label].pop())
            records.append({"text": "<br /><br />".join(parts), "label": -1 if split == "unsupervised" else label})
        out[split] = records
    return out


def write_imdb(hf_home: Path, records: dict[str, list[dict]], scratch: Path) -> None:
    """The datasets cache a real ``load_dataset("stanfordnlp/imdb")`` leaves, for offline reloads."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.packaged_modules.parquet.parquet import Parquet

    scratch.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, recs in records.items():
        files[split] = str(scratch / f"{split}.parquet")
        pq.write_table(pa.Table.from_pylist(recs), files[split])
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    bars_were_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        builder = Parquet(cache_dir=str(scratch / "build"), dataset_name="imdb", config_name="plain_text",
                          data_files=files, features=features)
        builder.download_and_prepare()
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()
    dst = hf_home / "datasets" / "stanfordnlp___imdb" / "plain_text" / "0.0.0" / COMMIT["stanfordnlp/imdb"]
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(builder.cache_dir, dst)
    info = json.loads((dst / "dataset_info.json").read_text())
    info.update(config_name="plain_text", dataset_name="imdb")
    (dst / "dataset_info.json").write_text(json.dumps(info))


def write_classifier(hf_home: Path, records: dict[str, list[dict]], scratch: Path) -> float:
    """``lvwerra/distilbert-imdb``: a small DistilBERT (NEGATIVE/POSITIVE) trained briefly on the
    stand-in's ``train`` labels. Returns its accuracy on ``test``."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizerFast

    from helpers.world import _clean_review

    train = [(_clean_review(r["text"]), r["label"]) for r in records["train"]]
    test = [(_clean_review(r["text"]), r["label"]) for r in records["test"]]
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator([t for t, _ in train], vocab_size=2_000, min_frequency=2)
    tok = DistilBertTokenizerFast(tokenizer_object=wp._tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)
    c = SIZES["clf"]
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=len(tok), dim=c["dim"], n_layers=c["n_layers"], n_heads=c["n_heads"],
                              hidden_dim=c["hidden_dim"], num_labels=2, max_position_embeddings=512,
                              id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    model = DistilBertForSequenceClassification(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    model.train()
    for _ in range(c["steps"]):
        batch = rng.sample(train, 32)
        enc = tok([t for t, _ in batch], truncation=True, max_length=128, padding=True, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([y for _, y in batch])).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        enc = tok([t for t, _ in test], truncation=True, max_length=128, padding=True, return_tensors="pt")
        pred = model(**enc).logits.argmax(-1)
    accuracy = (pred == torch.tensor([y for _, y in test])).float().mean().item()
    snap = _snapshot(hf_home, "lvwerra/distilbert-imdb")
    model.save_pretrained(snap)
    tok.save_pretrained(snap)
    return accuracy


def build_standins(hf_home: str | Path) -> dict:
    """Every stand-in under ``hf_home`` (use it as ``$HF_HOME``). Returns a few facts about them."""
    hf_home = Path(hf_home)
    scratch = hf_home / "_standin_build"
    tok = gpt2_tokenizer()
    write_gpt2(hf_home, tok)
    records = imdb_texts()
    write_imdb(hf_home, records, scratch)
    accuracy = write_classifier(hf_home, records, scratch / "clf")
    shutil.rmtree(scratch)
    lengths = [len(tok(r["text"])["input_ids"]) for r in records["train"][:200]]
    return {"classifier_test_accuracy": accuracy,
            "share_over_128_tokens": sum(n > 128 for n in lengths) / len(lengths)}


if __name__ == "__main__":
    print(build_standins(sys.argv[1]))
