"""The two profiles of the course -- which one runs, and every size each one uses.

``tiny``: a ~1 M-parameter GPT-2 and reviews made here; offline, CPU, minutes (what CI tests).
``gpt2``: GPT-2 124M + IMDb + a sentiment classifier from the hub, on a GPU (Colab).

Profile switch: ``DPO_PROFILE`` in {auto, tiny, gpt2} (default auto), see ``choose_profile``.

Sizes: one home. ``WORLD_SIZES`` (the world build: corpus, tokenizer, SFT), ``PAIRS_SIZES``
(the preference pairs), ``SFT_EVAL_SIZES`` (the SFT build's held-out loss), ``SFT_DEMO_SIZES``
(notebook 05), ``DPO_SIZES`` (the DPO runs of notebooks 06-08), ``RLHF_SIZES`` (notebook 08's live
RLHF), ``FRONTIER_SIZES`` (``scripts/run_frontier.py``): a hyper-parameter change is one edit here.
"""

from __future__ import annotations

import os
import socket
import ssl
import time

PROFILES = ("auto", "tiny", "gpt2")
HUB_PROBE = "huggingface.co:443"

# ----------------------------------------------------------------------------------------------
# sizes

# The world build (``helpers.world.World``'s size fields), per profile. gpt2: SFT of GPT-2 124M on
# IMDb train reviews cut to 128 tokens, 1,000 steps x 32 (~4 M tokens, ~1.3 epochs of 25k reviews
# at 128 tokens) at lr 5e-5 (transformers' run_clm / Trainer default for fine-tuning GPT-2); responses
# of 48 tokens and prompts of 2-8 tokens, as the DPO paper's IMDb task (prefixes of 2-8 tokens).
WORLD_SIZES = {
    "tiny": dict(prompt_tokens=(2, 8), max_new_tokens=40, pairs_drop_truncated=True, sft_max_length=64,
                 sft_steps=300, sft_batch_size=64, sft_lr=2e-3, n_reviews=40_000,
                 split_sizes={"prefs": 4_000, "test": 2_000}, vocab_size=2_000, n_layer=4, n_embd=128,
                 n_head=4, n_positions=64, seed=0),
    "gpt2": dict(prompt_tokens=(2, 8), max_new_tokens=48, pairs_drop_truncated=False, sft_max_length=128,
                 sft_steps=1_000, sft_batch_size=32, sft_lr=5e-5, n_reviews=40_000,
                 split_sizes={"prefs": 4_000, "test": 2_000}, vocab_size=2_000, n_layer=4, n_embd=128,
                 n_head=4, n_positions=1024, seed=0),
}

# The preference pairs (``helpers.pairs.get_preference_pairs``): k SFT samples for each of
# ``n_pair_prompts`` prompts of the pairs split, every differently-rewarded two of them a pair.
PAIRS_SIZES = {
    "tiny": dict(n_pair_prompts=1_000, k=4),
    "gpt2": dict(n_pair_prompts=1_000, k=4),
}

# The SFT build's held-out measurement (``helpers.world.build_sft_model``): the eval loss on this
# many texts (and as many training texts), in batches of ``eval_batch_size``. gpt2: 32 x 128 tokens
# x 50,257 float32 logits = 0.8 GB per batch (128 would be 3.3 GB, twice over in the log-softmax).
SFT_EVAL_SIZES = {
    "tiny": dict(n_eval_texts=500, eval_batch_size=128),
    "gpt2": dict(n_eval_texts=500, eval_batch_size=32),
}

# The DPO runs of notebooks 06-08, per profile. tiny: a ~1 M-parameter GPT-2 on a laptop CPU in
# about a minute per run (lr and steps chosen by scripts/diagnose_dpo.py's measurements).
# gpt2 (GPT-2 124M on one GPU; anchored, not yet measured on a GPU):
#   beta 0.1        -- the paper's and TRL DPOConfig's default;
#   batch 8 x 4     -- 32 pairs per update: half the paper's 64, TRL's per-device 8 with 4-step
#                      accumulation; 8 pairs x 96 tokens is 4.0 GiB per step on a T4 (t4_budget.py);
#   lr 5e-6         -- the paper's RMSprop 1e-6 (GPT-2-large, 774M) and TRL's 1e-6 are for larger
#                      models and longer runs; GPT-2 small was pretrained at 2.4x GPT-2-large's lr
#                      (6e-4 vs 2.5e-4), and 300 steps is a short run: 5x the paper's;
#   300 steps, warm-up 30 -- ~1.8 epochs of the ~5,400 training pairs; 10% warm-up (the
#                      alignment-handbook's warmup_ratio 0.1; the paper: 150 steps of a longer run);
#   sweep 4 betas x 200 steps at the same lr (notebook 07) -- T4 minutes: benchmarks/RESULTS.md.
DPO_SIZES = {
    "tiny": dict(beta=0.1, lr=1e-4, batch_size=32, gradient_accumulation_steps=1, max_steps=120, warmup_steps=10,
                 max_length=64, max_prompt_length=16, eval_every=40, n_eval_prompts=32, n_final_prompts=128,
                 samples_per_prompt=4, sweep_betas=(0.05, 0.2, 1.0), sweep_steps=60, sweep_lr=3e-4,
                 bon_ns=(1, 2, 4, 8, 16), optimum_samples=128),
    "gpt2": dict(beta=0.1, lr=5e-6, batch_size=8, gradient_accumulation_steps=4, max_steps=300, warmup_steps=30,
                 max_length=96, max_prompt_length=16, eval_every=100, n_eval_prompts=64, n_final_prompts=200,
                 samples_per_prompt=4, sweep_betas=(0.05, 0.1, 0.5, 1.0), sweep_steps=200, sweep_lr=5e-6,
                 bon_ns=(1, 2, 4, 8, 16), optimum_samples=128),
}

# Notebook 05's demo SFT run and its before/after samples (gpt2: 100 steps x 16 x 128 tokens, under a
# minute on a T4 by benchmarks/t4_budget.py; the world's own SFT model is the 1,000-step one).
SFT_DEMO_SIZES = {
    "tiny": dict(demo_steps=60, demo_batch_size=32, n_prompts=64, samples_per_prompt=4),
    "gpt2": dict(demo_steps=100, demo_batch_size=16, n_prompts=64, samples_per_prompt=4),
}

# Notebook 08's live RLHF section: the learned reward model, then a short PPO and RLOO run with the
# same budget (16 samples per iteration, 4 epochs x 2 mini-batches of 8 sequences), then a small
# evaluation. gpt2: the reward model (a GPT-2 124M backbone from SFT) at lr 1e-5 -- InstructGPT's
# reward models used 9e-6 (Ouyang et al. 2022, appendix C); tiny's 2e-3 suits a 1 M-parameter model
# trained from SFT in seconds, not a pretrained 124M one. PPO/RLOO at lr 1.41e-5, the learning
# rate of TRL's GPT-2 IMDb-sentiment PPO example (gpt2-sentiment), the classic run of this very task.
RLHF_SIZES = {
    "tiny": dict(reward_model=dict(steps=300, lr=2e-3, batch_size=32), n_train_prompts=256, n_eval_prompts=100,
                 steps=12,
                 ppo=dict(beta=0.1, lr=1e-4, batch_size=16, mini_batch_size=8, ppo_epochs=4),
                 rloo=dict(beta=0.1, lr=1e-4, batch_size=4, rloo_k=4, mini_batch_size=2, rloo_epochs=4),
                 n_check_prompts=32, check_samples=2),
    "gpt2": dict(reward_model=dict(steps=300, lr=1e-5, batch_size=32), n_train_prompts=256, n_eval_prompts=100,
                 steps=12,
                 ppo=dict(beta=0.1, lr=1.41e-5, batch_size=16, mini_batch_size=8, ppo_epochs=4),
                 rloo=dict(beta=0.1, lr=1.41e-5, batch_size=4, rloo_k=4, mini_batch_size=2, rloo_epochs=4),
                 n_check_prompts=32, check_samples=2),
}

# ``scripts/run_frontier.py``'s sweep (notebook 08's frontier). Its DPO runs are notebook 07's
# beta-sweep runs (DPO_SIZES: ``sweep_lr``, ``max_steps`` etc.), and its reward model is notebook
# 08's (RLHF_SIZES), so they are read from there, not copied. tiny: PPO and RLOO get the same samples
# (32 per iteration) and the same number of updates (4 epochs x 4 mini-batches of 8 sequences);
# RLOO's 32 samples are 8 prompts x k = 4. gpt2: a reduced sweep (one beta per RL method, two for
# DPO, 40 RL iterations, 64 evaluation prompts), sized to run live in notebook 08 on one GPU
# (benchmarks/RESULTS.md, "T4, computed"); the same shapes otherwise.


def _frontier_sizes(profile: str, **changes) -> dict:
    dpo = DPO_SIZES[profile]
    table = dict(n_eval_prompts=100, eval_samples=4, n_train_prompts=1000, rl_steps=80,
                 rl=dict(lr=1e-4, batch_size=32, mini_batch_size=8, ppo_epochs=4,
                         max_new_tokens=WORLD_SIZES[profile]["max_new_tokens"], temperature=1.0),
                 rloo=dict(batch_size=8, mini_batch_size=2, rloo_k=4, rloo_epochs=4),
                 ppo_betas=[0.03, 0.1, 0.3, 1.0], rloo_betas=[0.03, 0.1, 0.3, 1.0],
                 ppo_gt_betas=[0.03, 0.1, 0.3, 1.0], dpo_betas=[0.05, 0.1, 0.3, 1.0],
                 **{"dpo_lr1e-4_betas": [0.1, 0.3, 1.0]},
                 dpo={k: dpo[k] for k in ("batch_size", "gradient_accumulation_steps", "max_steps", "warmup_steps",
                                          "max_length", "max_prompt_length")} | {"lr": dpo["sweep_lr"]},
                 bon_ns=[1, 2, 4, 8, 16], rm=dict(RLHF_SIZES[profile]["reward_model"]),
                 # the optimum pi*_beta, estimated from this many SFT samples per evaluation prompt
                 # (helpers.optimum): it reaches at most log M nats, ~5.5 at M = 256
                 optimum_samples=256, optimum_betas=[0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7,
                                                     1.0, 2.0])
    return table | changes


FRONTIER_SIZES = {
    "tiny": _frontier_sizes("tiny"),
    "gpt2": _frontier_sizes(
        "gpt2", n_eval_prompts=64, rl_steps=40,
        rl=dict(lr=RLHF_SIZES["gpt2"]["ppo"]["lr"], batch_size=32, mini_batch_size=8, ppo_epochs=4,
                max_new_tokens=WORLD_SIZES["gpt2"]["max_new_tokens"], temperature=1.0),
        ppo_betas=[0.1], rloo_betas=[0.1], ppo_gt_betas=[0.1], dpo_betas=[0.1, 0.5], **{"dpo_lr1e-4_betas": []},
        optimum_samples=64, optimum_betas=[0.05, 0.1, 0.2, 0.5, 1.0, 2.0]),
}


# ``scripts/optimum_gap.py`` (notebook 09): one policy per target of ``helpers.targets.TARGETS``,
# from the same k = 8 SFT samples of each of 1,000 pairs-split prompts, per training seed, evaluated
# along training on the frontier's 100 held-out prompts with 16 samples each (common random numbers:
# one sampling seed for every method) against pi* from 256 SFT samples per prompt (the frontier's
# seed 3, as data/frontier.json). 16 prompts x their 8 responses per update (up to 448 pairs), 150
# updates = 2.4 epochs at lr 3e-4. Single-seed pilots on this world: soft-label DPO at 4 prompts per
# update reached 0.36 of pi*'s gain at 0.6 nats (lr 1e-4, 100 updates) and 0.45 at 3.0 (lr 3e-4),
# at 16 prompts 0.61 at 2.8 nats (lr 3e-4, 100 updates); distillation about 0.6 in all three.
OPTIMUM_GAP_SIZES = {
    "tiny": dict(n_train_prompts=1_000, k=8, sample_seed=11, n_eval_prompts=100, eval_samples=16, eval_seed=1,
                 optimum_samples=256, optimum_seed=3, optimum_betas=FRONTIER_SIZES["tiny"]["optimum_betas"],
                 beta=0.1, tau=1.0, lr=3e-4, prompts_per_step=16, warmup_steps=10, max_steps=150,
                 eval_steps=(25, 50, 75, 100, 150), seeds=(0, 1, 2),
                 # certain and sampled labels pass 3 nats before step 25: the same runs, evaluated earlier too
                 early_eval_steps=(5, 10, 15, 20), early_targets=("hard", "bt-sampled"),
                 # the implicit rewards' calibration: held-out SFT samples of the evaluation prompts
                 calibration_samples=8, calibration_seed=5,
                 # pi* from M samples on a prompt subset: M = 256, 1024, 4096 nested (the curve only rises)
                 m_sensitivity=dict(n_prompts=16, ms=(256, 1024, 4096), betas=(0.05, 0.1, 0.2, 0.5), seed=13),
                 # model class: fit the evaluation prompts' own samples, evaluated on the same prompts
                 amortisation=dict(n_prompts=32, targets=("soft", "distilled"), seed=0),
                 kl_budget=3.0, bootstrap=200),
}


# ----------------------------------------------------------------------------------------------
# the size knob: DPO_SCALE=smoke shrinks steps and counts (and nothing else) for a dress rehearsal
# -- every code path runs, in seconds, with the same lengths, model and data. No code branches on
# it: it only changes the numbers ``sizes`` hands out.

SCALES = ("full", "smoke")
SMOKE_CAPS = {
    # steps
    "sft_steps": 3, "max_steps": 4, "warmup_steps": 1, "eval_every": 2, "sweep_steps": 3,
    "demo_steps": 3, "steps": 2, "rl_steps": 2, "ppo_epochs": 1, "rloo_epochs": 1,
    "gradient_accumulation_steps": 2,
    # counts
    "sft_batch_size": 4, "batch_size": 4, "mini_batch_size": 2, "demo_batch_size": 4,
    "n_eval_prompts": 8, "n_final_prompts": 8, "n_prompts": 8, "n_train_prompts": 16,
    "n_check_prompts": 4, "samples_per_prompt": 2, "check_samples": 2, "eval_samples": 2,
    "n_eval_texts": 16, "eval_batch_size": 4, "n_pair_prompts": 24,
    "optimum_samples": 16, "rloo_k": 2,
}


def scale() -> str:
    """``$DPO_SCALE`` (default ``full``)."""
    value = os.environ.get("DPO_SCALE", "full").strip().lower() or "full"
    if value not in SCALES:
        raise ValueError(f"DPO_SCALE must be one of {SCALES}, got {value!r}")
    return value


def _apply_scale(table: dict, caps: dict) -> dict:
    """``table`` with every value whose key is in ``caps`` capped (nested dicts included)."""
    out = {}
    for k, v in table.items():
        if isinstance(v, dict):
            out[k] = _apply_scale(v, caps)
        elif k in caps and isinstance(v, int) and not isinstance(v, bool):
            out[k] = min(v, caps[k])
        else:
            out[k] = v
    return out


def sizes(table: dict, profile: str) -> dict:
    """A deep copy of ``table[profile]`` (one of the tables above), so a notebook can change it;
    under ``DPO_SCALE=smoke`` its steps and counts are capped by ``SMOKE_CAPS``."""
    import copy

    if profile not in table:
        raise ValueError(f"no sizes for profile {profile!r} (have {sorted(table)})")
    out = copy.deepcopy(table[profile])
    return _apply_scale(out, SMOKE_CAPS) if scale() == "smoke" else out


def world_sizes(profile: str) -> dict:
    """``sizes(WORLD_SIZES, profile)``."""
    return sizes(WORLD_SIZES, profile)


def dpo_sizes(profile: str) -> dict:
    """``sizes(DPO_SIZES, profile)``."""
    return sizes(DPO_SIZES, profile)


# ----------------------------------------------------------------------------------------------
# profile choice


def _parse_probe(spec: str) -> tuple[str, str, int]:
    """``"host:port"`` (TLS, like the hub) or ``"http://host:port"`` (plain HTTP, for tests)."""
    given = spec
    scheme = "https"
    if "://" in spec:
        scheme, spec = spec.split("://", 1)
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"DPO_HUB_PROBE={given!r}: expected host:port (e.g. huggingface.co:443) or "
                         "http://host:port")
    return scheme, host, int(port)


def probe_hub(spec: str | None = None, timeout: float = 2.5) -> bool:
    """Does the hub *answer* within ``timeout`` seconds (in total)?

    A TCP connect alone is not enough: an endpoint that accepts connections and never answers
    (a captive proxy, a black-holed firewall) makes ``from_pretrained`` hang forever. So the probe
    completes a TLS handshake and an HTTP request and waits for the status line, all under one
    deadline.

    Args:
        spec: ``"host:port"``, or ``"http://host:port"`` for plain HTTP; default ``$DPO_HUB_PROBE``
            or ``huggingface.co:443``.
        timeout: total seconds allowed.
    Returns:
        True if an HTTP status line came back in time.
    """
    scheme, host, port = _parse_probe(spec or os.environ.get("DPO_HUB_PROBE", HUB_PROBE))
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    try:
        with socket.create_connection((host, port), timeout=remaining()) as raw:
            sock = raw
            if scheme == "https":
                raw.settimeout(remaining())
                sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host)
            sock.settimeout(remaining())
            sock.sendall(f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            sock.settimeout(remaining())
            return sock.recv(16).startswith(b"HTTP/")
    except (OSError, TimeoutError, ValueError):  # socket.timeout and ssl.SSLError are OSErrors
        return False


def set_hub_offline() -> None:
    """Make every later hub call fail at once instead of retrying for ~23 s (or hanging).

    ``HF_HUB_OFFLINE=1`` in the environment only works if set before huggingface_hub is imported,
    so also flip the module constants that the libraries read at call time.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass
    try:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
    except ImportError:
        pass


def choose_profile(profile: str | None = None, cuda_available: bool | None = None,
                   probe_timeout: float = 2.5, verbose: bool = True) -> str:
    """Resolve ``profile`` (default ``$DPO_PROFILE``, else ``"auto"``) to ``"tiny"`` or ``"gpt2"``.

    ``auto`` picks ``gpt2`` only if CUDA is available *and* the hub answers ``probe_hub`` within
    ``probe_timeout`` seconds; otherwise ``tiny``, printing one line that says why. It never waits
    longer than the probe timeout. Choosing ``tiny`` also switches the hub libraries offline.

    Args:
        profile: "auto", "tiny" or "gpt2" (case-insensitive).
        cuda_available: override ``torch.cuda.is_available()`` (tests use it to reach the probe).
        probe_timeout: seconds for the hub probe.
        verbose: print the one-line reason for ``auto``'s choice.
    """
    requested = (profile or os.environ.get("DPO_PROFILE") or "auto").strip().lower()
    if requested not in PROFILES:
        raise ValueError(f"DPO_PROFILE must be one of {PROFILES}, got {requested!r}")
    chosen = requested
    if requested == "auto":
        if cuda_available is None:
            import torch

            cuda_available = torch.cuda.is_available()
        spec = os.environ.get("DPO_HUB_PROBE", HUB_PROBE)
        if not cuda_available:
            chosen, why = "tiny", "no CUDA GPU"
        elif not probe_hub(spec, timeout=probe_timeout):
            chosen, why = "tiny", f"the hub ({spec}) did not answer within {probe_timeout:g} s"
        else:
            chosen, why = "gpt2", f"CUDA GPU and the hub ({spec}) answers"
        if verbose:
            print(f"DPO_PROFILE=auto -> {chosen}: {why}")
    if chosen == "tiny":
        set_hub_offline()
    return chosen
