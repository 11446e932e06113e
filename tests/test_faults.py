"""Bad settings, bad data and faults end in a clear error or an exact recovery -- never a silent
wrong result. Each case here failed (or passed silently) before the fix it guards:

* settings: every DPOConfig / RLHFConfig field checked when the config is made, the message naming
  the field, the value and the allowed range; the command line gets the same messages (exit 2);
* data: one loader for user files that names the file, line and field (empty file, non-UTF-8,
  a cut last line, CSV, a lone surrogate); special-token strings in text stay text;
* faults: a resume refuses another run's checkpoint by name (settings or data), refuses a damaged
  checkpoint by file, finishes a save killed between its renames, and never unpickles code.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_gpt2, build_tiny_pairs, build_tiny_tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_train_dpo_script import SCRIPT, launch, load_script_module, make_script_world

from helpers.data import load_preference_file, text_ids, tokenize_preference, tokenize_preferences
from helpers.rlhf import RLHFConfig
from helpers.train import DPOConfig, read_metrics_csv, train_dpo

ROOT = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------------------------
# settings

BAD_DPO = [
    ("beta", -0.1), ("beta", 0.0), ("beta", math.nan), ("beta", math.inf), ("lr", 0.0), ("lr", -1e-3),
    ("max_grad_norm", 0.0), ("max_grad_norm", -1.0), ("warmup_steps", -1), ("batch_size", 0),
    ("batch_size", 2.5), ("gradient_accumulation_steps", 0), ("max_steps", 0), ("epochs", 0),
    ("label_smoothing", 0.5), ("label_smoothing", -0.1), ("loss_type", "hinge"), ("weight_decay", -0.01),
    ("seed", -1), ("eval_every", -1), ("checkpoint_every", -2), ("ref_batch_size", 0), ("max_length", 1),
    ("max_prompt_length", 64), ("max_prompt_length", 0), ("disable_dropout", "False"), ("beta", True),
]


@pytest.mark.parametrize("field,value", BAD_DPO)
def test_dpo_config_refuses_each_bad_field_by_name(field, value):
    with pytest.raises(ValueError, match=rf"^DPOConfig\.{field} = ") as err:
        DPOConfig(**{field: value})
    assert repr(value) in str(err.value) and "must be" in str(err.value)
    with pytest.raises(ValueError, match=rf"^DPOConfig\.{field} = "):  # replace() checks too
        dataclasses.replace(DPOConfig(), **{field: value})


def test_ipo_with_label_smoothing_is_refused_when_made():
    with pytest.raises(ValueError, match="label_smoothing = 0.1: must be 0 with loss_type='ipo'"):
        DPOConfig(loss_type="ipo", label_smoothing=0.1)


@pytest.mark.parametrize("field,value", [("beta", -1.0), ("lr", 0.0), ("mini_batch_size", 128), ("rloo_k", 1),
                                         ("temperature", 0.0), ("gamma", 1.5), ("lam", -0.1), ("ppo_epochs", 0),
                                         ("target_kl", 0.0), ("clip_range", 0.0), ("max_new_tokens", 0)])
def test_rlhf_config_refuses_each_bad_field_by_name(field, value):
    with pytest.raises(ValueError, match=rf"^RLHFConfig\.{field} = "):
        RLHFConfig(**{field: value})


@settings(max_examples=150, deadline=None)
@given(beta=st.floats(allow_nan=True, allow_infinity=True), lr=st.floats(allow_nan=True, allow_infinity=True),
       batch_size=st.integers(-3, 5), warmup=st.integers(-3, 5), ls=st.floats(-1, 1))
def test_a_dpo_config_is_either_refused_or_in_range(beta, lr, batch_size, warmup, ls):
    try:
        c = DPOConfig(beta=beta, lr=lr, batch_size=batch_size, warmup_steps=warmup, label_smoothing=ls)
    except ValueError as err:
        assert str(err).startswith("DPOConfig.")
        return
    assert math.isfinite(c.beta) and c.beta > 0 and math.isfinite(c.lr) and c.lr > 0
    assert c.batch_size >= 1 and c.warmup_steps >= 0 and 0 <= c.label_smoothing < 0.5


@pytest.mark.parametrize("argv,message", [
    (["--beta", "-0.1"], "DPOConfig.beta = -0.1"), (["--lr", "-1e-3"], "DPOConfig.lr = -0.001"),
    (["--batch-size", "0"], "DPOConfig.batch_size = 0"), (["--warmup-steps", "-1"], "DPOConfig.warmup_steps = -1"),
    (["--max-grad-norm", "0"], "DPOConfig.max_grad_norm = 0.0"), (["--epochs", "0"], "DPOConfig.epochs = 0"),
    (["--loss-type", "ipo", "--label-smoothing", "0.1"], "must be 0 with loss_type='ipo'"),
])
def test_command_line_gets_the_same_errors_before_loading_anything(argv, message, capsys):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import train_dpo as script
    finally:
        sys.path.remove(str(SCRIPT.parent))
    with pytest.raises(SystemExit) as exit_:
        script.parse_args(["--model", "nowhere", "--data", "nothing.jsonl", "--output-dir", "out", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_device_and_cache_settings_name_the_variable(monkeypatch):
    from helpers.config import cache_dir, get_device

    if not torch.cuda.is_available():
        monkeypatch.setenv("DPO_DEVICE", "cuda")
        with pytest.raises(ValueError, match="DPO_DEVICE = 'cuda', but this machine has no cuda device"):
            get_device()
    monkeypatch.setenv("DPO_DEVICE", "gpu")
    with pytest.raises(ValueError, match="DPO_DEVICE = 'gpu': not a device name"):
        get_device()
    monkeypatch.setenv("DPO_CACHE", "")
    with pytest.raises(ValueError, match="DPO_CACHE is set but empty"):
        cache_dir()


def test_max_length_beyond_the_models_positions_is_named(tiny_tokenizer, tiny_pairs):
    model = build_tiny_gpt2(tiny_tokenizer)  # n_positions 128
    config = DPOConfig(batch_size=4, max_steps=1, max_length=200, max_prompt_length=8)
    with pytest.raises(ValueError, match="DPOConfig.max_length = 200: must be <= 128"):
        train_dpo(model, build_tiny_gpt2(tiny_tokenizer), tiny_tokenizer, tiny_pairs, config, progress=False)


# ----------------------------------------------------------------------------------------------
# data

GOOD = {"prompt": "The movie was", "chosen": " great.", "rejected": " dull."}


@pytest.mark.parametrize("name,content,message", [
    ("empty.jsonl", b"", "the file is empty"),
    ("blank.jsonl", b"\n\n", "the file is empty"),
    ("latin1.jsonl", (json.dumps(GOOD) + "\n").encode() + b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n',
     "line 2: not UTF-8 text (byte 0xe9"),
    ("cut.jsonl", (json.dumps(GOOD) + "\n" + json.dumps(GOOD)[:20]).encode(), "line 2: not JSON (Unterminated string"),
    ("table.jsonl", b"prompt,chosen,rejected\nThe movie was, great., dull.\n", "line 1: not JSON"),
    ("surrogate.jsonl", b'{"prompt": "The movie", "chosen": "ok \\ud800", "rejected": "no"}\n',
     "line 1 (record 0: field 'chosen' is not valid Unicode text (surrogates not allowed at character 3))"),
    ("missing.jsonl", (json.dumps(GOOD) + "\n\n" + json.dumps({"prompt": "x", "chosen": "y"})).encode(),
     "line 3 (record 1: missing field 'rejected')"),
    ("dict.json", json.dumps(GOOD).encode(), "expected a JSON list of records, got a dict"),
    ("same.json", json.dumps([GOOD, {**GOOD, "rejected": GOOD["chosen"]}]).encode(),
     "(record 1: field 'rejected' equals 'chosen'"),
])
def test_user_data_errors_name_file_line_and_field(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        load_preference_file(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value), str(err.value)


def test_good_files_load_in_order(tmp_path):
    records = build_tiny_pairs(2)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "a.json").write_text(json.dumps(records))
    assert load_preference_file(tmp_path / "a.jsonl") == records == load_preference_file(tmp_path / "a.json")


def test_cli_prints_a_data_error_without_a_traceback(tmp_path):
    tok_dir, model_dir = tmp_path / "tok", tmp_path / "model"
    build_tiny_gpt2(build_tiny_tokenizer(tok_dir)).save_pretrained(str(model_dir))
    bad = tmp_path / "pairs.jsonl"
    bad.write_text(json.dumps(GOOD) + "\n" + '{"prompt": "x", "chosen": 3, "rejected": "z"}\n')
    cmd = [sys.executable, str(SCRIPT), "--model", str(model_dir), "--tokenizer", str(tok_dir), "--data", str(bad),
           "--output-dir", str(tmp_path / "out"), "--cpu", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{bad} line 2 (record 1: field 'chosen' must be a string, got int)" in proc.stderr
    assert "Traceback" not in proc.stderr


TEXT = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40) | st.sampled_from(
    ["<|endoftext|>", " <pad> ", "a<|endoftext|>b", "<|endoftext|><|endoftext|>"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=TEXT, chosen=TEXT, rejected=TEXT, max_length=st.integers(4, 24))
def test_tokenized_pairs_are_well_formed_or_refused_by_record(tiny_tokenizer, prompt, chosen, rejected, max_length):
    """Any text: either a ValueError naming the record, or ids where the EOS appears only as the
    appended last token (special-token strings in the data stay text), labels mask the prompt, and
    chosen and rejected differ."""
    record = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
    try:
        [ex] = tokenize_preferences([record], tiny_tokenizer, max_length=max_length, max_prompt_length=3)
    except ValueError as err:
        assert str(err).startswith("record 0")
        return
    n_prompt = len(ex["prompt_input_ids"])
    assert 1 <= n_prompt <= 3
    assert ex["chosen_input_ids"] != ex["rejected_input_ids"]
    for name in ("chosen", "rejected"):
        ids, labels = ex[f"{name}_input_ids"], ex[f"{name}_labels"]
        assert len(ids) <= max_length and labels[:n_prompt] == [-100] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
        assert eos not in ids[:-1] and pad not in ids  # never injected from the text
        assert (ids[-1] == eos) != ex[f"{name}_truncated"]


def test_special_token_text_is_text(tiny_tokenizer):
    ex = tokenize_preference({"prompt": "The movie was", "chosen": " great<|endoftext|> really", "rejected": " bad"},
                             tiny_tokenizer, max_length=64, max_prompt_length=16)
    response = ex["chosen_input_ids"][len(ex["prompt_input_ids"]):]
    assert response.count(tiny_tokenizer.eos_token_id) == 1 and response[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(response[:-1]) == " great<|endoftext|> really"


def test_truncation_is_counted_and_pairs_made_identical_are_refused_or_dropped(tiny_tokenizer):
    long = {"prompt": "The movie was", "chosen": " great and lovely and great", "rejected": " great and lovely and dull"}
    with pytest.raises(ValueError, match="record 0: 'chosen' and 'rejected' are identical after truncation"):
        tokenize_preferences([long], tiny_tokenizer, max_length=6, max_prompt_length=3)
    stats = {}
    with pytest.warns(UserWarning, match="dropped 1 of 2 records"):
        kept = tokenize_preferences([long, GOOD], tiny_tokenizer, max_length=6, max_prompt_length=3,
                                    on_invalid="drop", stats=stats)
    assert len(kept) == 1 and stats["dropped"] == 1 and stats["records"] == 2
    stats = {}
    tokenize_preferences([long], tiny_tokenizer, max_length=64, max_prompt_length=3, stats=stats)
    assert stats["truncated_chosen"] == stats["truncated_rejected"] == 0
    n_prompt = min(3, len(text_ids(tiny_tokenizer, long["prompt"])))
    fits = n_prompt + len(text_ids(tiny_tokenizer, " dull")) + 1  # the rejected response and its EOS just fit
    assert n_prompt + len(text_ids(tiny_tokenizer, long["chosen"])) + 1 > fits
    tokenize_preferences([{**long, "rejected": " dull"}], tiny_tokenizer, max_length=fits, max_prompt_length=3,
                         stats=stats)
    assert stats["truncated_chosen"] == 1 and stats["truncated_rejected"] == 0


# ----------------------------------------------------------------------------------------------
# faults: resume, damaged checkpoints, crafted pickles


class _Planted:
    """Unpickling this runs a shell command: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_helpers_resume_never_unpickles_code(tmp_path, tiny_tokenizer, tiny_pairs):
    marker = tmp_path / "ran"
    ckpt = tmp_path / "run"
    ckpt.mkdir()
    torch.save({"policy": _Planted(marker)}, ckpt / "checkpoint.pt")
    config = DPOConfig(batch_size=4, max_steps=1, checkpoint_dir=str(ckpt))
    with pytest.raises(Exception, match="Weights only load failed"):
        train_dpo(build_tiny_gpt2(tiny_tokenizer), build_tiny_gpt2(tiny_tokenizer), tiny_tokenizer, tiny_pairs,
                  config, progress=False)
    assert not marker.exists()


def test_helpers_resume_refuses_other_pairs_of_the_same_size(tmp_path, tiny_tokenizer, tiny_pairs):
    config = DPOConfig(batch_size=4, max_steps=2, checkpoint_dir=str(tmp_path / "run"), checkpoint_every=1)
    train_dpo(build_tiny_gpt2(tiny_tokenizer), build_tiny_gpt2(tiny_tokenizer), tiny_tokenizer, tiny_pairs,
              config, progress=False)
    swapped = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in tiny_pairs]
    with pytest.raises(ValueError, match=r"is of another run \(the pairs \(same number, other data\)\)"):
        train_dpo(build_tiny_gpt2(tiny_tokenizer), build_tiny_gpt2(tiny_tokenizer), tiny_tokenizer, swapped,
                  dataclasses.replace(config, max_steps=3), progress=False)
    with pytest.raises(ValueError, match=r"weight_decay: 0.0 -> 0.1"):
        train_dpo(build_tiny_gpt2(tiny_tokenizer), build_tiny_gpt2(tiny_tokenizer), tiny_tokenizer, tiny_pairs,
                  dataclasses.replace(config, max_steps=3, weight_decay=0.1), progress=False)


@pytest.fixture(scope="module")
def script_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault_world")
    world = make_script_world(root)
    with open(root / "swapped.jsonl", "w") as f:  # same size, other data
        for r in build_tiny_pairs(4):
            f.write(json.dumps({**r, "chosen": r["rejected"], "rejected": r["chosen"]}) + "\n")
    full = root / "full"
    code, _, output = launch(world, full, 1, 4)
    assert code == 0, output[-3000:]
    stopped = root / "stopped"
    code, _, output = launch(world, stopped, 1, 4, "--checkpoint-every", "2", "--interrupt-after", "2")
    assert code == 3 and "interrupted after step 2" in output, output[-3000:]
    return {**world, "full": full, "stopped": stopped}


def _copy(world, name: str) -> Path:
    out = world["root"] / name
    shutil.copytree(world["stopped"], out)
    return out


@pytest.mark.parametrize("extra,message", [
    (["--beta", "0.3"], "beta: 0.5 -> 0.3"),
    (["--lr", "2e-3"], "lr: 0.001 -> 0.002"),
    (["--weight-decay", "0.1"], "weight_decay: 0.0 -> 0.1"),
    (["--loss-type", "ipo"], "loss_type: 'sigmoid' -> 'ipo'"),
    (["--data-swapped"], "data_fingerprint:"),
])
def test_script_resume_refuses_another_run_by_name(script_world, extra, message):
    out = _copy(script_world, "changed-" + extra[0].strip("-") + "-" + extra[-1])
    w = dict(script_world)
    if extra == ["--data-swapped"]:
        w["data"], extra = str(script_world["root"] / "swapped.jsonl"), []
    code, _, output = launch(w, out, 1, 4, "--resume", *extra)
    assert code == 2, output[-3000:]
    assert "is of another run" in output and message in output and "Traceback" not in output


@pytest.mark.parametrize("damage,message", [
    ("flip", "model.safetensors differs from when it was saved"),
    ("delete", "random_states_0.pkl is missing"),
    ("plant", "extra.pkl was not written by the save"),
])
def test_script_resume_refuses_a_damaged_checkpoint(script_world, damage, message):
    out = _copy(script_world, f"damaged-{damage}")
    ckpt = out / "checkpoint"
    if damage == "flip":
        target = ckpt / "model.safetensors"
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
    elif damage == "delete":
        (ckpt / "random_states_0.pkl").unlink()
    else:
        (ckpt / "extra.pkl").write_bytes(b"not ours")
    code, _, output = launch(script_world, out, 1, 4, "--resume")
    assert code == 2, output[-3000:]
    assert "is damaged" in output and message in output


def test_script_finishes_a_save_killed_between_its_renames(script_world):
    """Killed after ``checkpoint`` -> ``checkpoint.old`` and before ``checkpoint.tmp`` ->
    ``checkpoint``: the complete tmp is used, it says so, and the run ends as the uninterrupted one."""
    out = _copy(script_world, "mid-rename")
    os.replace(out / "checkpoint", out / "checkpoint.tmp")
    code, _, output = launch(script_world, out, 1, 4, "--resume")
    assert code == 0, output[-3000:]
    assert "using checkpoint.tmp (a save killed before its last rename)" in output
    assert read_metrics_csv(out / "metrics.csv") == read_metrics_csv(script_world["full"] / "metrics.csv")


def test_script_says_when_resume_finds_nothing(script_world):
    code, _, output = launch(script_world, script_world["root"] / "fresh", 1, 4, "--resume", "--max-steps", "1")
    assert code == 0 and "no checkpoint in" in output and "starting from step 0" in output


def test_script_never_unpickles_planted_reference_logps(script_world):
    out = _copy(script_world, "planted")
    marker = out / "ran"
    torch.save(_Planted(marker), out / "ref_logps.pt")
    code, _, output = launch(script_world, out, 1, 4, "--resume")
    assert code != 0 and "Weights only load failed" in output
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# the cache never deletes what it did not write; leftovers of killed builds are never picked


def test_cache_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    from helpers.cache import build_artifact

    theirs = tmp_path / "reward_model"
    theirs.mkdir()
    (theirs / "thesis.txt").write_text("three years of work")
    with pytest.raises(ValueError, match="holds files this cache did not write"):
        build_artifact(theirs, {"steps": 1}, lambda tmp: (tmp / "w").write_text("x"))
    assert (theirs / "thesis.txt").read_text() == "three years of work"
    # beside artifacts of other settings at a fixed path, unrelated files in the parent stay
    (tmp_path / "results.csv").write_text("a,b\n")
    ours = tmp_path / "model"
    build_artifact(ours, {"steps": 1}, lambda tmp: (tmp / "w").write_text("1"))
    build_artifact(ours, {"steps": 2}, lambda tmp: (tmp / "w").write_text("2"))
    assert (ours / "w").read_text() == "2" and (tmp_path / "results.csv").read_text() == "a,b\n"


def test_profile_data_is_the_notebooks_pairs_never_a_leftover():
    from helpers.cache import is_built
    from helpers.pairs import pairs_path, pairs_spec
    from helpers.world import tiny_world

    world = tiny_world()
    if not is_built(pairs_path(world), pairs_spec(world, 1000, 4, 0)):
        pytest.skip("the tiny world's pairs are not built (python -m helpers.build build)")
    decoy = Path(world.pairs_dir) / f"{pairs_path(world).name}.tmp-99999" / "dataset"
    decoy.mkdir(parents=True)
    try:
        sys.path.insert(0, str(SCRIPT.parent))
        import train_dpo as script

        args = script.parse_args(["--profile", "tiny", "--output-dir", "unused"])
        assert args.data == str(pairs_path(world) / "dataset")
    finally:
        sys.path.remove(str(SCRIPT.parent))
        shutil.rmtree(decoy.parent)


def test_loading_reviews_into_a_fresh_datasets_cache_prints_no_progress(small_world, tmp_path):
    """A checked notebook cell must not print what depends on the state of ~/.cache: the first load
    of a split into a fresh datasets cache used to draw a "Generating split" bar."""
    code = ("from helpers.world import load_reviews, tiny_world; import json, sys; "
            f"w = tiny_world({str(small_world.root)!r}, **json.loads(sys.argv[1])); "
            "print(len(load_reviews(w, 'train')))")
    from conftest import SMALL_WORLD

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "fresh_cache")}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(SMALL_WORLD)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any((tmp_path / "fresh_cache").iterdir())  # it did generate the split there
    assert int(proc.stdout.split()[-1]) > 0 and "Generating" not in proc.stderr and "%|" not in proc.stderr


def test_helpers_resume_refuses_a_flipped_byte(tmp_path, tiny_tokenizer, tiny_pairs):
    """torch.load reads a checkpoint with one flipped weight byte without complaint (measured); the
    digest saved inside it catches that."""
    config = DPOConfig(batch_size=4, max_steps=2, checkpoint_dir=str(tmp_path / "run"), checkpoint_every=1)
    train_dpo(build_tiny_gpt2(tiny_tokenizer), build_tiny_gpt2(tiny_tokenizer), tiny_tokenizer, tiny_pairs,
              config, progress=False)
    path = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    weight = state["policy"]["transformer.wte.weight"]
    raw = path.read_bytes()
    needle = weight.contiguous().view(torch.uint8).numpy().tobytes()[:64]
    at = raw.find(needle)
    assert at > 0, "the weight bytes are stored as is"
    damaged = bytearray(raw)
    damaged[at + 3] ^= 0x10
    path.write_bytes(bytes(damaged))
    assert not torch.equal(torch.load(path, weights_only=True)["policy"]["transformer.wte.weight"], weight)
    with pytest.raises(ValueError, match="is damaged"):
        train_dpo(build_tiny_gpt2(tiny_tokenizer), build_tiny_gpt2(tiny_tokenizer), tiny_tokenizer, tiny_pairs,
                  dataclasses.replace(config, max_steps=3), progress=False)


def test_script_resume_with_dropout_on_is_exact(script_world):
    """--keep-dropout: dropout draws from the global RNG, which load_state restores; nothing else may
    draw from it in between (a new data-loader iterator used to), or the resumed run diverges."""
    full, stopped = script_world["root"] / "dropout-full", script_world["root"] / "dropout-stopped"
    code, _, output = launch(script_world, full, 1, 4, "--keep-dropout")
    assert code == 0, output[-3000:]
    code, _, output = launch(script_world, stopped, 1, 4, "--keep-dropout", "--checkpoint-every", "2",
                             "--interrupt-after", "3")
    assert code == 3, output[-3000:]
    code, _, output = launch(script_world, stopped, 1, 4, "--keep-dropout", "--checkpoint-every", "2", "--resume")
    assert code == 0, output[-3000:]
    a, b = read_metrics_csv(full / "metrics.csv"), read_metrics_csv(stopped / "metrics.csv")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    assert a[0]["loss"] != pytest.approx(0.6931472, abs=1e-6)  # dropout is on: pi_theta != pi_ref at step 1
    assert a == b


def test_bf16_only_where_the_gpu_has_it_natively():
    """A T4 (7.5) or V100 (7.0) reports is_bf16_supported() but emulates bf16: float32 there."""
    from helpers.config import autocast_dtype, has_native_bf16

    assert [has_native_bf16(c) for c in ((7, 0), (7, 5), (8, 0), (8, 6), (9, 0))] == [False, False, True, True, True]
    assert autocast_dtype("cpu") is None


def test_a_response_cut_at_its_length_limit_gets_no_eos(tiny_tokenizer):
    """gpt2 keeps truncated samples: a pair must score them as generated, never with an EOS the model
    did not produce (issue #12's bug 1); the flags are part of the data's fingerprint."""
    from helpers.cache import records_fingerprint
    from helpers.pairs import pairs_from_samples

    eos = tiny_tokenizer.eos_token_id
    records, _ = pairs_from_samples(["The movie was"], [[" great and lovely", " dull"]], [[0.9, -0.5]],
                                    ended=[[False, True]])
    [rec] = records
    assert rec["chosen_ended"] is False and rec["rejected_ended"] is True
    ex = tokenize_preference(rec, tiny_tokenizer, max_length=64, max_prompt_length=16)
    n = len(ex["prompt_input_ids"])
    assert ex["chosen_input_ids"][n:] == text_ids(tiny_tokenizer, " great and lovely")  # as generated
    assert ex["rejected_input_ids"][-1] == eos
    plain = {k: rec[k] for k in ("prompt", "chosen", "rejected")}
    assert tokenize_preference(plain, tiny_tokenizer, 64, 16)["chosen_input_ids"][-1] == eos  # default: ended
    assert records_fingerprint([rec]) != records_fingerprint([{**rec, "chosen_ended": True}])
    assert records_fingerprint([plain]) == records_fingerprint([{**plain, "chosen_reward": 1.0}])
    with pytest.raises(ValueError, match="field 'chosen_ended' must be true or false"):
        tokenize_preferences([{**plain, "chosen_ended": "no"}], tiny_tokenizer)


def test_saved_results_of_another_world_are_refused_with_the_rebuild_command(tmp_path):
    from helpers.world import load_world_results, tiny_world, world_fingerprint

    world = tiny_world(tmp_path / "w")
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"world_fingerprint": world_fingerprint(world), "runs": [1]}))
    assert load_world_results(path, world, "python make.py")["runs"] == [1]
    other = tiny_world(tmp_path / "w", sft_steps=world.sft_steps + 1)
    with pytest.raises(ValueError, match=r"sweep.json was made on another world .* rebuild it with `python make.py`"):
        load_world_results(path, other, "python make.py")


# ----------------------------------------------------------------------------------------------
# numbers that are not numbers: a clear error, never a silently wrong average


def test_one_non_finite_reward_is_named_not_averaged_into_the_optimum():
    import numpy as np

    from helpers.optimum import optimum_frontier

    rewards = np.zeros((3, 4))
    rewards[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"rewards\[1, 2\] \(prompt 1, sample 2\) is nan"):
        optimum_frontier(rewards, [0.1, 1.0])
    rewards[1, 2] = np.inf
    with pytest.raises(ValueError, match="must be finite"):
        optimum_frontier(rewards, [0.1])


def test_a_nan_score_is_not_counted_as_a_wrong_ranking():
    import numpy as np

    from helpers.implicit import ranking_accuracy

    with pytest.raises(ValueError, match="pair 1 has a NaN score"):
        ranking_accuracy(np.array([1.0, np.nan, 2.0]), np.array([0.0, 0.0, 0.0]))


def test_ipo_with_beta_zero_says_why():
    from helpers.losses import ipo_loss

    z = torch.zeros(2)
    with pytest.raises(ValueError, match="beta must be > 0"):
        ipo_loss(z, z, z, z, beta=0.0)


def test_an_infinite_gradient_norm_stops_the_run(tiny_tokenizer, tiny_pairs):
    """beta = 1e30 overflows the logits: every gradient is clipped to nothing, so the run must stop."""
    config = DPOConfig(beta=1e30, batch_size=4, max_steps=3)
    with pytest.raises(FloatingPointError, match=r"step 1: .*beta = 1e\+30"):
        train_dpo(build_tiny_gpt2(tiny_tokenizer), build_tiny_gpt2(tiny_tokenizer), tiny_tokenizer, tiny_pairs, config,
                  progress=False)


@pytest.mark.parametrize("args, words", [(["--jobs", "0"], "must be at least 1"), (["--jobs", "two"], "not a whole"),
                                         (["--only", "DPPO"], "invalid choice")])
def test_run_frontier_refuses_counts_that_would_hang_and_unknown_methods(args, words):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_frontier.py"), *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr[-500:]


def test_a_finished_run_is_not_replaced_by_a_second_run(tmp_path, capsys):
    """A second `train_dpo.py` into a finished run's --output-dir (no --resume) would replace its
    metrics.csv in silence: refused, naming what is there; --resume or --overwrite say what is meant."""
    script = load_script_module()
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text("step,loss\n1,0.69\n")
    base = ["--model", str(tmp_path), "--data", str(tmp_path / "pairs.jsonl"), "--output-dir", str(out)]
    with pytest.raises(SystemExit) as stop:
        script.parse_args(base)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "is not empty (metrics.csv)" in err and "--resume" in err and "--overwrite" in err
    assert script.parse_args([*base, "--resume"]).resume and script.parse_args([*base, "--overwrite"]).overwrite
    with pytest.raises(SystemExit):
        script.parse_args([*base, "--resume", "--overwrite"])
    assert "give one of them" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit):
        script.parse_args([*base[:-1], str(tmp_path / "afile")])
    assert "is a file, not a folder" in capsys.readouterr().err
    assert (out / "metrics.csv").read_text() == "step,loss\n1,0.69\n"  # untouched
    assert script.parse_args([*base[:-1], str(tmp_path / "new")]).output_dir == str(tmp_path / "new")


def test_one_cache_wherever_python_runs_and_a_file_is_not_a_cache(tmp_path, monkeypatch):
    """A relative DPO_CACHE resolved against the working directory: the build (repository root) and
    Jupyter (notebooks/) used two caches. It is relative to the repository now; a file is refused."""
    from helpers.config import REPO_ROOT, cache_dir

    monkeypatch.setenv("DPO_CACHE", "artifacts")
    here = cache_dir()
    monkeypatch.chdir(REPO_ROOT / "notebooks")
    assert cache_dir() == here == (REPO_ROOT / "artifacts").resolve()
    (tmp_path / "a_file").write_text("x")
    monkeypatch.setenv("DPO_CACHE", str(tmp_path / "a_file"))
    with pytest.raises(ValueError, match="is a file, not a folder"):
        cache_dir()


def test_a_world_of_other_settings_never_replaces_the_default_one(tmp_path, monkeypatch):
    """get_world(sft_steps=2) at the default cache built its SFT model into <cache>/tiny/sft, over the
    default world's; a world of other settings gets <cache>/tiny-<fingerprint of the changes>."""
    from helpers.world import get_world, tiny_world

    monkeypatch.setenv("DPO_CACHE", str(tmp_path))
    default = get_world("tiny")
    other = get_world("tiny", sft_steps=2)
    assert Path(default.root) == tmp_path / "tiny" and Path(default.sft_dir) == tmp_path / "tiny" / "sft"
    assert Path(other.root).parent == tmp_path and Path(other.root).name.startswith("tiny-")
    assert Path(other.sft_dir) == Path(other.root) / "sft" and other.sft_steps == 2
    assert get_world("tiny", sft_steps=default.sft_steps).root == default.root  # no change: the same world
    assert get_world("tiny", sft_steps=2).root == other.root  # the same change: the same folder
    assert tiny_world(tmp_path / "mine", sft_steps=2).root == str(tmp_path / "mine")  # a root given is kept


def test_a_build_that_makes_no_pairs_is_not_cached_as_finished(small_world):
    """DPO_SCALE=smoke on the tiny profile: a 3-step SFT model wrote identical responses, 0 pairs were
    cached as a finished build, and build/report/train_dpo.py failed later with IndexError. One
    sample per prompt makes 0 pairs for certain: the build says why and caches nothing."""
    from helpers.cache import is_built
    from helpers.pairs import get_preference_pairs, pairs_path, pairs_spec

    with pytest.raises(ValueError, match=r"gave 0 preference pairs from 4 samples \(1 per prompt"):
        get_preference_pairs(small_world, n_prompts=4, k=1, progress=False)
    assert not is_built(pairs_path(small_world, 4, 1, 0), pairs_spec(small_world, 4, 1, 0))


def test_on_invalid_drop_works_for_json_files_and_a_bom_is_read(tmp_path, capsys):
    """--on-invalid drop did nothing for .json/.jsonl (the loader raised on the first bad record
    first); a UTF-8 byte-order mark (Notepad, Excel) was refused."""
    good = [{"prompt": "a", "chosen": " b", "rejected": " c"}, {"prompt": "d", "chosen": " e", "rejected": " f"}]
    lines = [json.dumps(good[0]), "{not json", json.dumps({"prompt": "x", "chosen": " y", "rejected": " y"}),
             json.dumps(good[1])]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")  # with a BOM
    with pytest.raises(ValueError, match="line 2: not JSON"):
        load_preference_file(jsonl)
    assert load_preference_file(jsonl, on_invalid="drop") == good
    out = capsys.readouterr().out
    assert "dropped 2 invalid lines or records (--on-invalid drop), kept 2" in out and "line 2" in out
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(good[0]).encode())
    assert load_preference_file(tmp_path / "bom.jsonl") == good[:1]
    as_json = tmp_path / "pairs.json"
    as_json.write_text(json.dumps([good[0], {"prompt": "p"}, good[1]]))
    with pytest.raises(ValueError):
        load_preference_file(as_json)
    assert load_preference_file(as_json, on_invalid="drop") == good
    script = load_script_module()
    assert script.load_records(str(as_json), on_invalid="drop") == good


def test_a_split_that_is_not_there_is_named(tmp_path):
    import datasets

    script = load_script_module()
    rows = [{"prompt": "a", "chosen": " b", "rejected": " c"}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match=r"no split 'test' \(its splits: train\)"):
        script.load_records(str(tmp_path / "dd"), split="test")


def test_a_model_that_is_not_there_is_named_before_anything_loads(tmp_path, monkeypatch, capsys):
    """`train_dpo.py --model <a missing folder>` gave a traceback about repo ids (or waited for the
    hub offline); now the flag and the path are named at once, exit 2."""
    script = load_script_module()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = ["--data", str(tmp_path / "pairs.jsonl"), "--output-dir", str(tmp_path / "out")]
    for model, words in ((str(tmp_path / "no_such_sft"), "no such folder"),
                         ("./runs/sft", "no such folder"),
                         ("someone/not-cached-model", "not a local folder, and not in the hub cache")):
        with pytest.raises(SystemExit) as stop:
            script.parse_args(["--model", model, *base])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert f"--model {model}: {words}" in err, err
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(SystemExit):
        script.parse_args(["--model", str(tmp_path / "weights.bin"), *base])
    assert "a file; give the folder" in capsys.readouterr().err
    assert script.parse_args(["--model", str(tmp_path), *base]).model == str(tmp_path)


def test_bad_settings_end_in_a_named_error(tmp_path, monkeypatch):
    """DPO_HUB_PROBE without a port; a results file with git conflict markers; DPO_PROFILE=gpt2 for
    `python -m helpers.build` (it built tiny, exit 0) and a DPO_PROFILE that is no profile."""
    from helpers import build as B
    from helpers.profiles import probe_hub
    from helpers.world import load_world_results, tiny_world

    with pytest.raises(ValueError, match="DPO_HUB_PROBE='huggingface.co': expected host:port"):
        probe_hub("huggingface.co")
    conflicted = tmp_path / "frontier.json"
    conflicted.write_text('{\n<<<<<<< HEAD\n "a": 1\n=======\n "a": 2\n>>>>>>> other\n}\n')
    with pytest.raises(ValueError, match="git conflict markers .* `git checkout --theirs"):
        load_world_results(conflicted, tiny_world(tmp_path / "w"), "python scripts/run_frontier.py")
    monkeypatch.setenv("DPO_PROFILE", "tiny-ish")
    with pytest.raises(SystemExit) as stop:
        B.main(["report"])
    assert stop.value.code == 2
    seen = {}

    def chosen(profile):  # stands in for the build itself: only which world it would build is asked
        seen["profile"] = profile
        raise RuntimeError("stop here")

    monkeypatch.setattr(B, "get_world", chosen)
    monkeypatch.setenv("DPO_PROFILE", "GPT2")
    with pytest.raises(RuntimeError, match="stop here"):
        B.main(["build"])
    assert seen["profile"] == "gpt2"


@pytest.mark.parametrize("script", ["run_frontier.py", "optimum_gap.py", "diagnose_dpo.py"])
def test_out_a_folder_is_refused_before_the_work(script, tmp_path):
    """`--out <an existing folder>` failed only when the results were written, after the work."""
    done = subprocess.run([sys.executable, str(Path(SCRIPT).parent / script), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2, done.stdout[-500:] + done.stderr[-1500:]
    assert f"--out {tmp_path}: a folder; give the path of the JSON file" in done.stderr


def test_output_file_makes_its_folder_and_refuses_a_file_as_folder(tmp_path):
    from helpers.config import output_file

    assert output_file(tmp_path / "new" / "r.json") == tmp_path / "new" / "r.json" and (tmp_path / "new").is_dir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        output_file(tmp_path / "f" / "r.json")
