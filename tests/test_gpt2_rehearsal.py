"""The `gpt2` profile's dress rehearsal: every notebook 00-08 executed with ``DPO_PROFILE=gpt2`` on
CPU, offline, through the profile's own loading calls (``from_pretrained("gpt2")``,
``load_dataset("stanfordnlp/imdb")``, ``pipeline(model="lvwerra/distilbert-imdb")``), with the
stand-ins of ``tests/gpt2_standins.py`` in the hub's caches (``$HF_HOME``) -- where
``python -m helpers.build download --profile gpt2`` leaves the real ones on a lab machine.

``DPO_SCALE=smoke`` shrinks steps and counts (``helpers.profiles.SMOKE_CAPS``), nothing else. The
notebooks are executed as copies (the committed tiny outputs are never touched); a notebook passes
when every cell runs, and the facts below about the gpt2 road hold in its outputs.

Needs ``openai-whisper`` (installed ``--no-deps``: only its ``assets/gpt2.tiktoken`` is read) and
``tiktoken``; CI installs both (``.ci/run``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("0*.ipynb"))

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("whisper") is None or importlib.util.find_spec("tiktoken") is None,
    reason="the gpt2 rehearsal needs GPT-2's BPE: pip install --no-deps openai-whisper && pip install tiktoken")


@pytest.fixture(scope="module")
def rehearsal_env(tmp_path_factory):
    """``$HF_HOME`` with the stand-ins, an empty course cache, and the environment of a lab machine
    prepared for ``gpt2`` and cut off from the network."""
    from tests.gpt2_standins import build_standins

    base = tmp_path_factory.mktemp("gpt2_rehearsal")
    facts = build_standins(base / "hf")
    env = {"HF_HOME": str(base / "hf"), "HF_HUB_OFFLINE": "1", "DPO_PROFILE": "gpt2", "DPO_SCALE": "smoke",
           "DPO_CACHE": str(base / "artifacts"), "DPO_DEVICE": "cpu", "HF_DATASETS_OFFLINE": "1"}
    return env, facts


def test_standins_are_faithful(rehearsal_env):
    """The stand-ins keep what the gpt2 road depends on: GPT-2's ids, IMDb's shape, a 2-label head."""
    env, facts = rehearsal_env
    assert facts["share_over_128_tokens"] > 0.3  # long reviews: SFT texts get cut at 128 tokens
    assert facts["classifier_test_accuracy"] > 0.8  # its log-odds track the held-out labels


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append(out["text"])
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
    return "\n".join(parts)


# what each notebook must show about the road it ran (beyond running without an error)
EXPECT = {
    "00_setup_and_tour.ipynb": ["profile: gpt2"],
    "04_sequence_logprobs.ipynb": ["profile gpt2", "vocabulary 50257, eos id 50256, pad id 50256"],
    "05_sft_reference.ipynb": ["profile gpt2"],
    "06_dpo_training_loop.ipynb": ["profile gpt2"],
    # cut responses (nearly every gpt2 sample) are scored without an EOS, so the token sums match
    "07_implicit_rewards.ipynb": ["profile gpt2", "sums equal the sequence-level implicit rewards: True"],
    # 08 under gpt2 sweeps the gpt2 world itself (reduced, live), never shows tiny's sweep as its own
    "08_rlhf_vs_dpo.ipynb": ["profile: gpt2", "on the gpt2 world, reduced sweep run in this notebook"],
}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_under_gpt2(name, rehearsal_env, monkeypatch):
    from nbclient import NotebookClient

    env, _ = rehearsal_env
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits the environment
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute()  # raises CellExecutionError naming the cell on any error
    text = _outputs_text(nb)
    for expected in EXPECT.get(name, []):
        assert expected in text, f"{name}: {expected!r} not in its outputs under gpt2"
    assert "profile tiny" not in text and "profile: tiny" not in text, f"{name} ran the tiny profile"
    assert os.environ["DPO_PROFILE"] == "gpt2"


def _build_cli(env: dict, *args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "helpers.build", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)


def test_download_checks_a_prepared_machine_offline(rehearsal_env):
    """``download`` offline: every item of the gpt2 profile found in the caches (the stand-ins)."""
    env, _ = rehearsal_env
    out = _build_cli(env, "download", "--profile", "gpt2")
    assert out.returncode == 0, out.stdout + out.stderr
    for item in ("tokenizer gpt2: 50257 tokens", "model gpt2", "dataset stanfordnlp/imdb [train]",
                 "dataset stanfordnlp/imdb [unsupervised]", "dataset stanfordnlp/imdb [test]",
                 "reward lvwerra/distilbert-imdb"):
        assert f"ok      {item}" in out.stdout, (item, out.stdout)


def test_download_names_what_is_missing(rehearsal_env, tmp_path):
    """An unprepared machine, offline: the command fails and names each missing artifact."""
    env, _ = rehearsal_env
    out = _build_cli({**env, "HF_HOME": str(tmp_path / "empty")}, "download", "--profile", "gpt2")
    assert out.returncode != 0
    for item in ("tokenizer gpt2", "model gpt2", "dataset stanfordnlp/imdb [train]", "reward lvwerra/distilbert-imdb"):
        assert f"MISSING {item}" in out.stdout, (item, out.stdout)
    assert "could not be loaded" in out.stderr

