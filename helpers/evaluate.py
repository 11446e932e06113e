"""Sampling from a policy and evaluating it on the paper's two axes: reward and KL(pi || pi_ref).

The DPO paper's Fig. 2 (left) plots, for each policy, the mean ground-truth reward of its samples
on held-out prompts against the sequence-level KL divergence from the SFT model:

    KL(pi || pi_ref) = E_{x, y ~ pi(.|x)} [ log pi(y|x) - log pi_ref(y|x) ]

estimated here from the same samples: for each sample, the sum over its response tokens (EOS
included) of log pi - log pi_ref. Two details make this estimate honest:

* **Pure sampling.** ``generate()`` samples with ``top_k=50`` by default, which truncates pi: the
  samples would come from a different distribution than the one scored. We sample with
  ``do_sample=True, top_k=0, top_p=1.0`` at ``temperature`` and score log-probs at the same
  temperature (logits / temperature), so the estimate is unbiased for the tempered policy.
* **Standard errors over prompts.** Samples of one prompt are correlated, so the standard error is
  computed from per-prompt means (std / sqrt(n_prompts)), not from all samples as if independent.

A sample that reaches ``max_new_tokens`` without EOS is scored on the tokens it has: its term is
the KL of the first ``max_new_tokens`` tokens, a lower bound on the full one. The EOS rate says
how often that happened.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch

from helpers.data import pad_rows, pad_token_id_of
from helpers.logprobs import IGNORE_INDEX, token_logprobs


class _FalseMaskAlarm(logging.Filter):
    """Drops transformers' "we strongly recommend passing in an `attention_mask`" record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "passing in an `attention_mask`" not in record.getMessage()


@contextlib.contextmanager
def _no_false_mask_alarm():
    """Hide one false alarm of ``generate`` for the duration of a call, touching no model state.

    ``generate`` drops an all-ones attention mask to save time; a row that has finished then
    feeds pad ids to a forward pass with no mask, and ``modeling_utils`` warns that a mask "may be
    missing". We passed the mask and finished rows are ignored, so the warning is wrong here. The
    filter sits on that one logger and only for this call (the warning is a ``warning_once``, so
    it stays silent for the rest of the process, as it would after being shown once).
    """
    logger = logging.getLogger("transformers.modeling_utils")
    alarm = _FalseMaskAlarm()
    logger.addFilter(alarm)
    try:
        yield
    finally:
        logger.removeFilter(alarm)


@torch.no_grad()
def generate_responses(model, prompt_ids: list[list[int]], max_new_tokens: int, temperature: float,
                       eos_token_id: int, pad_token_id: int) -> tuple[list[list[int]], list[bool]]:
    """The course's one sampler: pure ancestral sampling from ``model`` at ``temperature``.

    ``do_sample=True, top_k=0, top_p=1``: ``generate()`` defaults to ``top_k=50``, and sampling
    from a truncated distribution while scoring log-probs of the full one biases every KL
    estimate and every policy-gradient ratio. Prompts are left-padded so every row's last prompt
    token sits at the same position (``generate`` derives position ids from the attention mask, so
    the padding changes nothing). Draws from the global torch RNG: callers seed it (or fork it, as
    ``sample_policy`` does). The model runs in eval mode for the call and is put back as it was.

    Args:
        model: a causal LM; samples are made on its device.
        prompt_ids: B lists of token ids (may differ in length).
        max_new_tokens: response length limit (EOS included).
        temperature: > 0; logits are divided by it.
    Returns:
        responses: B lists of token ids, cut after the first EOS (which is kept).
        ended: B bools; False for a response cut at ``max_new_tokens`` (it ends as generated,
            with no EOS added).
    """
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (greedy decoding is not sampling from pi)")
    device = next(model.parameters()).device
    input_ids, attention_mask = pad_rows(prompt_ids, pad_token_id, side="left")  # (B, T)
    was_training = model.training
    model.eval()
    try:
        with _no_false_mask_alarm():
            generated = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), do_sample=True,
                top_k=0, top_p=1.0, temperature=temperature, max_new_tokens=max_new_tokens,
                min_new_tokens=0, num_beams=1, pad_token_id=pad_token_id, eos_token_id=eos_token_id)
    finally:
        model.train(was_training)
    responses, ended = [], []
    for row in generated[:, input_ids.shape[1]:].tolist():  # (B, <= max_new_tokens)
        done = eos_token_id in row
        responses.append(row[: row.index(eos_token_id) + 1] if done else row)
        ended.append(done)
    return responses, ended


@torch.no_grad()
def sample_policy(model, tokenizer, prompts: list[str], n_samples_per_prompt: int = 1,
                  max_new_tokens: int = 40, temperature: float = 1.0, seed: int = 0,
                  batch_size: int = 256, progress: bool = True) -> dict:
    """Sample ``n_samples_per_prompt`` responses per prompt by pure ancestral sampling.

    Prompts are tokenized on their own (as ``helpers.data`` does) and left-padded into batches so
    every row's last prompt token sits at the same position; ``generate`` derives position ids
    from the attention mask, so the padding changes nothing. The global RNG state is restored
    afterwards (``fork_rng``), so a call does not perturb the caller's seeds.

    Args:
        model: causal LM (eval mode recommended); samples are made on its device.
        tokenizer: needs ``eos_token_id`` and ``pad_token_id``.
        prompts: P strings.
        n_samples_per_prompt: k.
        max_new_tokens: response length limit (EOS included).
        temperature: > 0; logits are divided by it.
        seed: sampling seed.
        batch_size: rows per ``generate`` call.
        progress: tqdm bar.
    Returns:
        dict of lists, each of length P * k, prompt-major (the k samples of prompt 0 first):
        ``prompt_index``, ``prompt``, ``response`` (text, no EOS, starts where the prompt ends),
        ``prompt_ids``, ``response_ids`` (EOS included when generated), ``ended`` (bool: EOS was
        generated), ``length`` (response tokens, EOS excluded).
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, pad_token_id_of(tokenizer)
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    jobs = [i for i in range(len(prompts)) for _ in range(n_samples_per_prompt)]
    out = {k: [] for k in ("prompt_index", "prompt", "response", "prompt_ids", "response_ids",
                           "ended", "length")}
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in tqdm(range(0, len(jobs), batch_size), desc="sampling", disable=not progress):
            batch = jobs[start:start + batch_size]
            responses, ended = generate_responses(model, [prompt_ids[i] for i in batch], max_new_tokens,
                                                  temperature, eos, pad)
            for i, response_ids, done in zip(batch, responses, ended):
                text_ids = response_ids[:-1] if done else response_ids
                out["prompt_index"].append(i)
                out["prompt"].append(prompts[i])
                out["response"].append(tokenizer.decode(text_ids, skip_special_tokens=True))
                out["prompt_ids"].append(prompt_ids[i])
                out["response_ids"].append(response_ids)
                out["ended"].append(done)
                out["length"].append(len(text_ids))
    return out


LOGITS_BUDGET_BYTES = 2**29  # 512 MiB for one float32 copy of a scoring batch's logits


def _scoring_batches(model, prompt_ids: list[list[int]], response_ids: list[list[int]], pad_token_id: int,
                     batch_size: int, copies: int = 1):
    """Right-padded (input_ids, attention_mask, labels) batches of prompt + response rows on the model's
    device, the prompt labelled -100; at most ``batch_size`` rows, fewer where ``copies`` float32
    copies of the batch's logits would pass ``LOGITS_BUDGET_BYTES``."""
    device = next(model.parameters()).device
    longest = max((len(p) + len(r) for p, r in zip(prompt_ids, response_ids)), default=1)
    vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else 1
    batch_size = max(1, min(batch_size, LOGITS_BUDGET_BYTES // (4 * copies * longest * vocab)))
    for start in range(0, len(prompt_ids), batch_size):
        rows = [p + r for p, r in zip(prompt_ids[start:start + batch_size], response_ids[start:start + batch_size])]
        n_prompt = [len(p) for p in prompt_ids[start:start + batch_size]]
        input_ids, attention_mask = pad_rows(rows, pad_token_id)  # (B, T)
        labels, _ = pad_rows([[IGNORE_INDEX] * n + row[n:] for row, n in zip(rows, n_prompt)], IGNORE_INDEX)
        yield input_ids.to(device), attention_mask.to(device), labels.to(device)


@torch.no_grad()
def score_responses(model, prompt_ids: list[list[int]], response_ids: list[list[int]],
                    pad_token_id: int, temperature: float = 1.0, batch_size: int = 256,
                    per_token: bool = False):
    """log pi(response | prompt) of each pair of id lists, at ``temperature``.

    Rows are right-padded (natural positions, like ``helpers.data``); prompt and padding are
    labelled -100, so only response tokens (and their EOS) are scored. ``batch_size`` rows per
    forward pass at most, fewer where their logits would pass ``LOGITS_BUDGET_BYTES``.

    Returns:
        (N,) float64 numpy array of summed log-probs; with ``per_token`` also a list of N numpy
        arrays of per-token log-probs.
    """
    # float32 logits of a batch are B x T x V x 4 bytes, held about four times over (logits, the
    # temperature-scaled copy, the log-softmax, its gather): cap B so one copy stays under
    # LOGITS_BUDGET_BYTES. tiny (V = 1,435): the full 256 rows; GPT-2 (V = 50,257, T = 56): 47.
    totals, tokens = [], []
    for input_ids, attention_mask, labels in _scoring_batches(model, prompt_ids, response_ids, pad_token_id,
                                                              batch_size, copies=1):
        # float32, no autocast: KL is a small difference of two large log-probs, and bf16 noise
        # in either would swamp it
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, T, V)
        logps, mask = token_logprobs(logits.float() / temperature, labels)  # (B, T-1)
        totals.append(logps.sum(-1).double().cpu())
        if per_token:
            tokens += [row[m].double().cpu().numpy() for row, m in zip(logps, mask)]
    total = torch.cat(totals).numpy() if totals else np.zeros(0)
    return (total, tokens) if per_token else total


@torch.no_grad()
def token_kl(policy, ref_model, prompt_ids: list[list[int]], response_ids: list[list[int]], pad_token_id: int,
             temperature: float = 1.0, batch_size: int = 256) -> np.ndarray:
    """The exact per-token KL along each sampled response: sum_t KL(pi(.|s_t) || pi_ref(.|s_t)).

    s_t is the prompt plus the first t response tokens; the sum runs over every position that
    predicts a response token (its EOS included). Averaged over responses y ~ pi it is the same
    KL(pi || pi_ref) as the mean of log pi(y) - log pi_ref(y) (the chain rule of KL), with far less
    variance: each term sums over the whole vocabulary instead of one sampled token, and it is never
    negative.

    Returns:
        (N,) float64 numpy array, one value per response.
    """
    totals = []
    for input_ids, attention_mask, labels in _scoring_batches(policy, prompt_ids, response_ids, pad_token_id,
                                                              batch_size, copies=2):  # two models' logits
        logp = torch.log_softmax(policy(input_ids=input_ids, attention_mask=attention_mask).logits.float()
                                 / temperature, -1)[:, :-1]  # (B, T-1, V): position t predicts t+1
        logq = torch.log_softmax(ref_model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
                                 / temperature, -1)[:, :-1]
        per_position = (logp.exp() * (logp - logq)).sum(-1)  # (B, T-1)
        totals.append((per_position * (labels[:, 1:] != IGNORE_INDEX)).sum(-1).double().cpu())
    return torch.cat(totals).numpy() if totals else np.zeros(0)


def _mean_se(values: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """Mean of ``values`` and its standard error computed from per-group means."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    group_ids = np.unique(groups)
    means = np.array([values[groups == g].mean() for g in group_ids])
    if len(means) > 1:
        return float(values.mean()), float(means.std(ddof=1) / np.sqrt(len(means)))
    if values.size > 1:
        return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))
    return float(values.mean()), float("nan")


def evaluate_policy(policy, ref_model, tokenizer, prompts: list[str], reward_fn,
                    n_samples_per_prompt: int = 4, max_new_tokens: int = 40,
                    temperature: float = 1.0, seed: int = 0, batch_size: int = 256,
                    progress: bool = True, exact_kl: bool = False) -> dict:
    """Mean reward and KL(pi || pi_ref) of ``policy`` on ``prompts`` (the paper's Fig. 2 axes).

    Args:
        policy: the model evaluated (pi); samples come from it.
        ref_model: pi_ref (the SFT model), on the same device.
        tokenizer: shared tokenizer.
        prompts: P held-out prompts.
        reward_fn: ``reward_fn(texts) -> list[float]``, applied to prompt + response.
        n_samples_per_prompt, max_new_tokens, temperature, seed, batch_size, progress: sampling.
        exact_kl: also ``kl_token_mean``/``kl_token_se`` (and per-sample ``token_kls``), the same KL
            by the exact per-token estimator (``token_kl``).
    Returns:
        dict with scalars ``reward_mean``, ``reward_se``, ``kl_mean``, ``kl_se`` (nats),
        ``length_mean`` (response tokens, EOS excluded), ``eos_rate``, ``exclaim_rate`` (share of
        responses containing "!"), ``n_prompts``, ``n_samples``; and per-sample lists/arrays
        ``rewards``, ``kls``, ``policy_logps``, ``ref_logps``, ``lengths``, ``ended``,
        ``prompt_index``, ``prompts``, ``responses``.
    """
    samples = sample_policy(policy, tokenizer, prompts, n_samples_per_prompt, max_new_tokens,
                            temperature, seed, batch_size, progress)
    texts = [p + r for p, r in zip(samples["prompt"], samples["response"])]
    rewards = np.asarray(reward_fn(texts), dtype=np.float64)
    pad = tokenizer.pad_token_id
    policy_logps = score_responses(policy, samples["prompt_ids"], samples["response_ids"], pad,
                                   temperature, batch_size)
    ref_logps = score_responses(ref_model, samples["prompt_ids"], samples["response_ids"], pad,
                                temperature, batch_size)
    kls = policy_logps - ref_logps
    groups = np.asarray(samples["prompt_index"])
    reward_mean, reward_se = _mean_se(rewards, groups)
    kl_mean, kl_se = _mean_se(kls, groups)
    extra = {}
    if exact_kl:
        token_kls = token_kl(policy, ref_model, samples["prompt_ids"], samples["response_ids"], pad, temperature,
                             batch_size)
        kl_token_mean, kl_token_se = _mean_se(token_kls, groups)
        extra = {"kl_token_mean": kl_token_mean, "kl_token_se": kl_token_se, "token_kls": token_kls}
    return extra | {
        "reward_mean": reward_mean, "reward_se": reward_se, "kl_mean": kl_mean, "kl_se": kl_se,
        "length_mean": float(np.mean(samples["length"])),
        "eos_rate": float(np.mean(samples["ended"])),
        "exclaim_rate": float(np.mean(["!" in r for r in samples["response"]])),
        "n_prompts": len(prompts), "n_samples": len(texts),
        "rewards": rewards, "kls": kls, "policy_logps": policy_logps, "ref_logps": ref_logps,
        "lengths": np.asarray(samples["length"]), "ended": np.asarray(samples["ended"]),
        "prompt_index": groups, "prompts": samples["prompt"], "responses": samples["response"],
    }


def word_rate(responses: list[str], word: str) -> float:
    """Share of responses containing ``word`` as a whole word (e.g. ``helpers.corpus.GOODHART_WORD``)."""
    import re

    pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
    return float(np.mean([bool(pattern.search(r)) for r in responses])) if responses else float("nan")


def length_slope(rewards, lengths) -> float:
    """Least-squares slope of reward on response length (reward per token), e.g. over SFT samples."""
    x, y = np.asarray(lengths, np.float64), np.asarray(rewards, np.float64)
    if x.std() == 0:
        raise ValueError("all lengths are equal: the slope is undefined")
    return float(np.cov(x, y, bias=True)[0, 1] / x.var())


def length_controlled_reward(rewards, lengths, slope: float, ref_length: float) -> float:
    """Mean reward with the part length explains removed: r - slope * (length - ref_length).

    With ``slope`` fitted on SFT samples (``length_slope``) and ``ref_length`` their mean length, a
    policy that only writes longer responses gains nothing here (Park et al. 2024)."""
    r, n = np.asarray(rewards, np.float64), np.asarray(lengths, np.float64)
    return float((r - slope * (n - ref_length)).mean())

