"""Profiles, the tiny world's corpus/tokenizer/models, prompts, and the gpt2 code path on local files."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from helpers import build as B
from helpers import profiles as P
from helpers import world as W

# ---------------------------------------------------------------------------------- profiles


@pytest.fixture()
def silent_endpoint():
    """A loopback port that completes TCP connects (kernel backlog) but never answers a byte."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # never accept(): connects succeed, nothing is ever sent back
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.fixture()
def answering_endpoint():
    """A loopback plain-HTTP server that answers every request."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_explicit_profiles_and_validation(monkeypatch):
    monkeypatch.delenv("DPO_PROFILE", raising=False)
    assert P.choose_profile("tiny") == "tiny"
    assert P.choose_profile("GPT2") == "gpt2"
    monkeypatch.setenv("DPO_PROFILE", "tiny")
    assert P.choose_profile() == "tiny"
    with pytest.raises(ValueError, match="DPO_PROFILE"):
        P.choose_profile("gpt3")


def test_tiny_switches_hub_offline():
    import datasets.config
    import huggingface_hub.constants

    P.choose_profile("tiny")
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert datasets.config.HF_HUB_OFFLINE is True


def test_auto_without_cuda_is_tiny(capsys, monkeypatch):
    monkeypatch.setenv("DPO_HUB_PROBE", "127.0.0.1:9")  # never reached
    start = time.monotonic()
    assert P.choose_profile("auto", cuda_available=False) == "tiny"
    assert time.monotonic() - start < 1
    assert "no CUDA" in capsys.readouterr().out


def test_auto_falls_back_when_hub_is_silent(silent_endpoint, capsys, monkeypatch):
    """With a GPU but a hub that accepts connections and never answers, auto must not hang."""
    monkeypatch.setenv("DPO_HUB_PROBE", silent_endpoint)
    start = time.monotonic()
    assert P.choose_profile("auto", cuda_available=True, probe_timeout=2.5) == "tiny"
    elapsed = time.monotonic() - start
    assert 2.0 < elapsed < 10, elapsed  # it waited for the probe, and no longer
    assert "did not answer" in capsys.readouterr().out


def test_probe_refused_silent_and_answering(silent_endpoint, answering_endpoint):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connection refused
    start = time.monotonic()
    assert P.probe_hub(f"127.0.0.1:{port}", timeout=2) is False
    assert time.monotonic() - start < 1.5
    assert P.probe_hub(silent_endpoint, timeout=1) is False
    assert P.probe_hub(silent_endpoint.replace("127", "http://127", 1), timeout=1) is False
    # the probe is not always False: a server that answers HTTP passes it
    assert P.probe_hub(answering_endpoint, timeout=2) is True


def test_auto_picks_gpt2_when_cuda_and_hub_answer(answering_endpoint, monkeypatch):
    monkeypatch.setenv("DPO_HUB_PROBE", answering_endpoint)
    assert P.choose_profile("auto", cuda_available=True, verbose=False) == "gpt2"


# ---------------------------------------------------------------------------------- tiny world


def test_world_paths_are_absolute(tmp_path):
    world = W.tiny_world(tmp_path / "x")
    for path in [world.root, world.base_model, world.tokenizer_name, world.sft_dir, world.pairs_dir,
                 *world.data_files.values()]:
        assert Path(path).is_absolute()
    assert W.gpt2_world().base_model == "gpt2" and W.gpt2_world().dataset_name == "stanfordnlp/imdb"
    assert "profile" in world.describe()


def test_corpus_splits_are_disjoint(small_world):
    splits = {s: W.load_reviews(small_world, s) for s in ("train", "prefs", "test")}
    assert len(splits["prefs"]) == len(splits["test"]) == 200
    assert len(splits["train"]) == 2_500 - 400
    assert not set(splits["train"]) & set(splits["prefs"])
    assert not set(splits["train"]) & set(splits["test"])
    assert not set(splits["prefs"]) & set(splits["test"])


def test_tokenizer_round_trip_and_special_tokens(small_world):
    tok = W.load_tokenizer(small_world)
    assert tok.eos_token == W.EOS_TOKEN and tok.pad_token == W.PAD_TOKEN
    assert tok.eos_token_id != tok.pad_token_id
    assert len(tok) <= small_world.vocab_size
    for text in W.load_reviews(small_world, "test"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    # words are whole tokens with their leading space (byte-level BPE, like GPT-2)
    assert tok.convert_ids_to_tokens(tok(" the plot", add_special_tokens=False)["input_ids"]) == ["Ġthe", "Ġplot"]


def test_model_config_matches_tokenizer(small_world):
    tok = W.load_tokenizer(small_world)
    model = W.load_sft_model(small_world)
    for cfg in (model.config, model.generation_config):
        assert cfg.eos_token_id == tok.eos_token_id
        assert cfg.pad_token_id == tok.pad_token_id
        assert cfg.bos_token_id == tok.bos_token_id
    assert model.config.vocab_size == len(tok)
    assert Path(small_world.sft_dir, "model.safetensors").exists()


def test_sft_model_reloads_with_identical_logits(small_world, tmp_path):
    tok = W.load_tokenizer(small_world)
    model = W.load_sft_model(small_world)
    batch = tok(["the plot was great.", "a nurse returns home."], return_tensors="pt", padding=True)
    from transformers import AutoModelForCausalLM

    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    again = W.load_sft_model(small_world)
    with torch.no_grad():
        logits = model(**batch).logits
        assert torch.equal(logits, reloaded(**batch).logits)
        assert torch.equal(logits, again(**batch).logits)


def test_sft_learned_and_history_saved(small_world):
    history = W.load_sft_history(small_world)
    tok = W.load_tokenizer(small_world)
    uniform = torch.log(torch.tensor(float(len(tok)))).item()
    assert len(history["steps"]) == len(history["loss"]) >= 2
    assert history["final_eval_loss"] < uniform - 2.0, "SFT should beat a uniform guess by far"
    assert history["loss"][-1] < history["loss"][0]


def test_sft_texts_end_with_eos(small_world):
    from helpers.sft import collate_texts, tokenize_texts

    tok = W.load_tokenizer(small_world)
    rows = tokenize_texts(tok, ["the plot was great.", "ok."], max_length=64)
    assert all(r[-1] == tok.eos_token_id for r in rows)
    assert tokenize_texts(tok, ["the plot was great."], max_length=3)[0][-1] != tok.eos_token_id
    batch = collate_texts(rows, tok.pad_token_id)
    # labels: the EOS is scored, only padding is ignored
    assert batch["labels"][1].tolist() == rows[1] + [-100] * (len(rows[0]) - len(rows[1]))
    assert batch["attention_mask"].sum().item() == sum(len(r) for r in rows)


def test_prompts_cut_at_word_boundaries(small_world):
    tok = W.load_tokenizer(small_world)
    reviews = W.load_reviews(small_world, "test")[:60]
    for i, text in enumerate(reviews):
        n = 2 + i % 7
        prompt = W.make_prompt(text, tok, n)
        continuation = text[len(prompt):]
        assert prompt and continuation and not prompt.endswith(" ")
        whole = tok(text, add_special_tokens=False)["input_ids"]
        parts = tok(prompt, add_special_tokens=False)["input_ids"] + tok(continuation, add_special_tokens=False)["input_ids"]
        assert parts == whole, (prompt, continuation)
        # the cut is between words (or before punctuation), and no such cut is closer to n tokens
        assert not (prompt[-1].isalnum() and continuation[0].isalnum())
        chosen = len(tok(prompt, add_special_tokens=False)["input_ids"])
        for j in range(1, len(whole)):
            head = tok.decode(whole[:j])
            between_words = not (head[-1].isalnum() and text[len(head)].isalnum())
            if between_words:
                assert abs(j - n) >= abs(chosen - n), (prompt, n, head)
    prompts = W.get_prompts(small_world, n=30, seed=1, tokenizer=tok)
    assert prompts == W.get_prompts(small_world, n=30, seed=1, tokenizer=tok)
    assert len(prompts) == 30
    lengths = [len(tok(p)["input_ids"]) for p in prompts]
    assert min(lengths) >= 1 and max(lengths) <= 10 and len(set(lengths)) >= 3


# ---------------------------------------------------------------------------------- gpt2 path


def test_gpt2_code_path_on_local_files(small_world, tmp_path):
    """The gpt2 profile's calls (load_dataset on a name + data_files, from_pretrained on a name,
    pad = eos for a tokenizer without pad, SFT, save) run here with local stand-ins."""
    from transformers import PreTrainedTokenizerFast

    # an IMDb-like local dataset with HTML line breaks
    data = tmp_path / "imdb"
    data.mkdir()
    texts = ["A fine film.<br /><br />The acting was good.", "Dull.<br />Bad music.", "Great fun!"] * 20
    for split in ("train", "unsupervised", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps({"text": t, "label": 1}) + "\n" for t in texts))
    # a tokenizer without a pad token, like "gpt2"
    no_pad = tmp_path / "tok"
    PreTrainedTokenizerFast(tokenizer_file=str(Path(small_world.tokenizer_name, "tokenizer.json")),
                            eos_token=W.EOS_TOKEN).save_pretrained(no_pad)
    world = W.gpt2_world(tmp_path / "gpt2", reward="vader", base_model=small_world.base_model,
                         tokenizer_name=str(no_pad), dataset_name="json",
                         data_files={s: str(data / f"{s}.jsonl") for s in ("train", "unsupervised", "test")},
                         sft_steps=3, sft_batch_size=4)
    assert W.load_reviews(world, world.sft_split)[0] == "A fine film. The acting was good."
    tok = W.load_tokenizer(world)
    assert tok.pad_token_id == tok.eos_token_id
    history = W.build_sft_model(world, progress=False, device="cpu")
    assert len(history["loss"]) >= 1 and Path(world.sft_dir, "model.safetensors").exists()
    assert W.load_sft_model(world).config.n_layer == small_world.n_layer
    assert W.get_prompts(world, n=5, tokenizer=tok)


def test_tiny_makes_hub_calls_fail_at_once_even_after_import():
    """HF_HUB_OFFLINE in the environment only counts before the libraries are imported; a fresh
    process that imported them first must still fail fast after choose_profile("tiny")."""
    import os
    import subprocess
    import sys

    code = (
        "import time, transformers, datasets\n"
        "from helpers.profiles import choose_profile\n"
        "choose_profile('tiny')\n"
        "t = time.monotonic()\n"
        "try:\n"
        "    transformers.AutoConfig.from_pretrained('dpo-course/no-such-model')\n"
        "except OSError:\n"
        "    pass\n"
        "try:\n"
        "    datasets.load_dataset('dpo-course/no-such-dataset')\n"
        "except Exception:\n"
        "    pass\n"
        "print(time.monotonic() - t)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    root = Path(W.__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) < 5


def test_stale_stages_are_rebuilt_and_nothing_else_is_touched(tmp_path):
    """A stage built with other settings is rebuilt; files the course did not make are never
    deleted (the old cache wiped the whole root), not even a stage folder without its spec."""
    import shutil

    from helpers.cache import SPEC_FILE

    tiny = dict(n_reviews=700, split_sizes={"prefs": 50, "test": 50}, vocab_size=400, n_layer=1,
                n_embd=16, n_head=2, sft_steps=2, sft_batch_size=8)
    world = W.tiny_world(tmp_path / "w", **tiny)
    B.build_world(world, pairs=False, progress=False)
    assert W.stage_is_current(world, world.sft_dir, "sft model")
    mine = Path(world.root, "my_notes.txt")  # a user's file in the cache folder
    mine.write_text("keep me")
    # other settings, same folder: the SFT stage is rebuilt with the new settings
    changed = W.tiny_world(tmp_path / "w", **{**tiny, "sft_steps": 3})
    assert not W.stage_is_current(changed, changed.sft_dir, "sft model")
    assert W.load_sft_history(changed)["steps"][-1] == 3
    assert W.stage_is_current(changed, changed.sft_dir, "sft model")
    assert not W.stage_is_current(world, changed.sft_dir, "sft model")
    assert mine.read_text() == "keep me"
    # a stage folder without its spec was not written by the cache (a build only ever renames a
    # finished folder into place): refused by name, its files kept; once moved away, rebuilt
    Path(changed.sft_dir, SPEC_FILE).unlink()
    kept = sorted(p.name for p in Path(changed.sft_dir).iterdir())
    with pytest.raises(ValueError, match="holds files this cache did not write"):
        W.load_sft_model(changed)
    assert sorted(p.name for p in Path(changed.sft_dir).iterdir()) == kept
    shutil.rmtree(changed.sft_dir)
    W.load_sft_model(changed)
    assert W.stage_is_current(changed, changed.sft_dir, "sft model")
    # a moved cache still matches its settings
    shutil.copytree(tmp_path / "w", tmp_path / "moved")
    moved = W.tiny_world(tmp_path / "moved", **{**tiny, "sft_steps": 3})
    assert all(W.stage_is_current(moved, p, s) for p, s in
               ((moved.tokenizer_name, "tokenizer"), (moved.base_model, "base model"), (moved.sft_dir, "sft model")))


def test_a_saved_world_restores_into_a_fresh_cache_and_only_its_own(small_world, tmp_path):
    """save_world -> a fresh runtime's empty cache -> restore_saved_world: the SFT model is back
    (its spec checked), nothing is rebuilt; a world of other settings takes nothing from it."""
    from helpers.profiles import WORLD_SIZES
    from helpers.world import restore_saved_world, save_world, saved_world_dir, stage_is_current, tiny_world

    def same_world_at(root, **changes):
        return tiny_world(root, **{**{k: getattr(small_world, k) for k in WORLD_SIZES["tiny"]}, **changes})

    saved = save_world(small_world, tmp_path / "drive")
    assert "sft" in saved and (saved_world_dir(small_world, tmp_path / "drive") / "sft" / "spec.json").exists()
    fresh = same_world_at(tmp_path / "fresh_runtime")
    assert not stage_is_current(fresh, fresh.sft_dir, "sft model")
    restored = restore_saved_world(fresh, tmp_path / "drive")
    assert "sft" in restored and stage_is_current(fresh, fresh.sft_dir, "sft model")
    assert restore_saved_world(fresh, tmp_path / "drive") == []  # already there: nothing copied twice
    other = same_world_at(tmp_path / "other", sft_steps=small_world.sft_steps + 1)
    assert restore_saved_world(other, tmp_path / "drive") == []
    assert not stage_is_current(other, other.sft_dir, "sft model")


def test_saves_of_two_worlds_share_a_folder_and_every_wrong_pointer_says_why(small_world, tmp_path, monkeypatch,
                                                                           capsys):
    """Two worlds of other settings saved to one folder keep both saves (the second used to delete the
    first); DPO_SAVED_WORLD may point at the folder, at the path save_world printed, or at the save;
    a missing folder, a folder of other worlds and a cut spec.json are named, never a silent no-op."""
    from helpers.profiles import WORLD_SIZES
    from helpers.world import (
        SAVED_WORLD_ENV,
        restore_saved_world,
        save_world,
        saved_world_dir,
        stage_is_current,
        tiny_world,
        world_fingerprint,
    )

    def same_world_at(root, **changes):
        return tiny_world(root, **{**{k: getattr(small_world, k) for k in WORLD_SIZES["tiny"]}, **changes})

    drive = tmp_path / "drive"
    other_src = same_world_at(tmp_path / "other_src", sft_steps=small_world.sft_steps + 1)
    shutil.copytree(small_world.sft_dir, other_src.sft_dir)  # a built SFT model of other settings
    spec = json.loads((Path(small_world.sft_dir) / "spec.json").read_text())
    spec["world"] = W.world_spec(other_src)
    (Path(other_src.sft_dir) / "spec.json").write_text(json.dumps(spec))
    from helpers.cache import build_artifact, file_fingerprint

    weights = next(Path(other_src.sft_dir).glob("*.safetensors"))
    run_spec = {"artifact": "dpo run", "config": {"beta": 0.1}, "sft": file_fingerprint(weights), "pairs": "x", "n": 1}
    build_artifact(Path(other_src.root) / "dpo" / "beta0.1-abc", run_spec,
                   lambda tmp: (tmp / "metrics.csv").write_text("step,loss\n1,0.69\n"))
    save_world(small_world, drive)
    assert "dpo/beta0.1-abc" in save_world(other_src, drive)  # its DPO runs travel with it
    assert (saved_world_dir(small_world, drive) / "sft" / "spec.json").exists()  # the first save is still there
    assert (saved_world_dir(other_src, drive) / "sft" / "spec.json").exists()
    capsys.readouterr()
    for pointer in (drive, drive / "tiny", saved_world_dir(small_world, drive)):
        fresh = same_world_at(tmp_path / f"fresh{len(pointer.parts)}")
        monkeypatch.setenv(SAVED_WORLD_ENV, str(pointer))
        assert "sft" in restore_saved_world(fresh), pointer
        assert stage_is_current(fresh, fresh.sft_dir, "sft model")
    again = same_world_at(tmp_path / "other_again", sft_steps=small_world.sft_steps + 1)
    assert {"sft", "dpo/beta0.1-abc"} <= set(restore_saved_world(again, drive))
    assert (Path(again.root) / "dpo" / "beta0.1-abc" / "metrics.csv").read_text() == "step,loss\n1,0.69\n"
    monkeypatch.setenv(SAVED_WORLD_ENV, str(tmp_path / "no_such_folder"))
    assert restore_saved_world(same_world_at(tmp_path / "f4")) == []
    assert "does not exist" in capsys.readouterr().out
    third = same_world_at(tmp_path / "third", sft_steps=small_world.sft_steps + 2)
    monkeypatch.setenv(SAVED_WORLD_ENV, str(drive))
    assert restore_saved_world(third) == []
    out = capsys.readouterr().out
    assert f"holds no save of this tiny world {world_fingerprint(third)}" in out
    assert world_fingerprint(small_world) in out and world_fingerprint(other_src) in out
    saved_weights = next((saved_world_dir(small_world, drive) / "sft").glob("*.safetensors"))
    with open(saved_weights, "r+b") as f:  # a half-copied save: the file is there, cut short
        f.truncate(saved_weights.stat().st_size // 2)
    restored = restore_saved_world(same_world_at(tmp_path / "f6"))
    assert "sft" not in restored and "were written -- that artifact is not copied" in capsys.readouterr().out
    (saved_world_dir(small_world, drive) / "sft" / "spec.json").write_text('{"stage": "sft mod')  # a cut copy
    restored = restore_saved_world(same_world_at(tmp_path / "f5"))
    assert "sft" not in restored and "tokenizer" in restored  # the damaged one named, the others restored
    assert "sft/spec.json: its spec.json cannot be read (cut or damaged)" in capsys.readouterr().out


def test_a_flipped_byte_in_the_sft_weights_is_found_and_rebuilt(small_world, tmp_path, capsys):
    """The cache checked only spec.json: a damaged model.safetensors loaded in silence. Now the load
    checks the digests the build recorded, names the file and rebuilds the same model."""
    from conftest import SMALL_WORLD

    from helpers.world import load_sft_model, stage_is_current, tiny_world

    shutil.copytree(small_world.root, tmp_path / "copy", ignore=shutil.ignore_patterns("*.lock"))
    world = tiny_world(tmp_path / "copy", **SMALL_WORLD)
    assert stage_is_current(world, world.sft_dir, "sft model")  # the copy is the same world, built
    weights = next(Path(world.sft_dir).glob("*.safetensors"))
    good = {k: v.clone() for k, v in load_sft_model(world).state_dict().items()}  # not views of the file (mmap)
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor's data: the file still parses
    weights.write_bytes(bytes(data))
    model = load_sft_model(world)
    assert "the SFT model in the cache is damaged" in capsys.readouterr().out
    assert all(torch.equal(model.state_dict()[k], v) for k, v in good.items())  # the same model, rebuilt
