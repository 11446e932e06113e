# ---
# jupyter:
#   jupytext:
#     formats: ipynb,src//py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dpo-course/dpo-from-scratch/blob/main/notebooks/04_sequence_logprobs.ipynb)
#
# # 04 — Sequence log-probabilities: the one number DPO needs from a language model
#
# The DPO loss (notebook 03) needs, for every preference pair $(x, y_w, y_l)$, four numbers:
# $\log\pi_\theta(y_w\mid x)$, $\log\pi_\theta(y_l\mid x)$, $\log\pi_{\mathrm{ref}}(y_w\mid x)$,
# $\log\pi_{\mathrm{ref}}(y_l\mid x)$. A causal language model gives the probability of a response
# one token at a time, so
#
# $$\log \pi(y \mid x) \;=\; \sum_{t=1}^{|y|} \log \pi\big(y_t \,\big|\, x,\, y_{<t}\big).$$
#
# Getting this number right is most of the work of implementing DPO, and most DPO bugs are silent
# errors here: an off-by-one shift, a mask that scores the prompt or hides the EOS, a tokenization
# that merges across the prompt/response boundary, dropout in the reference, low-precision logits.
# This notebook builds the computation step by step on a real model, checks it against a naive
# loop, and then **shows** each trap on real numbers.
#
# The model is the SFT model of the course's task world (notebook 05 trains it; it is loaded from
# the cache, or built when missing): a 1 M-parameter GPT-2 on short movie reviews in the `tiny`
# profile, GPT-2 124M on IMDb in the `gpt2` profile.

# %%
# NBVAL_IGNORE_OUTPUT
# Setup (the same cell in every notebook). In Colab: fetch the course once and install only what
# Colab lacks. Locally: find the repository root. Either way, make `import helpers` work.
import importlib.util
import os
import subprocess
import sys

REPO_URL = os.environ.get("DPO_COURSE_REPO", "https://github.com/dpo-course/dpo-from-scratch")
if "google.colab" in sys.modules:
    root = os.environ.get("DPO_COURSE_DIR", "/content/dpo-from-scratch")
    if not os.path.isdir(os.path.join(root, "helpers")):
        subprocess.run(["git", "clone", "--depth", "1", "--quiet", REPO_URL, root], check=True)
    needed = {"vaderSentiment": "vaderSentiment"}  # what Colab lacks to run the notebooks
    missing = [pkg for pkg, mod in needed.items() if importlib.util.find_spec(mod) is None]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
else:
    root = os.getcwd()
    while not os.path.isdir(os.path.join(root, "helpers")) and os.path.dirname(root) != root:
        root = os.path.dirname(root)
if root not in sys.path:
    sys.path.insert(0, root)
import helpers

print("helpers", helpers.__version__, "from", os.path.relpath(root))  # relative: no machine's paths

# %%
# NBVAL_IGNORE_OUTPUT
import copy
import math

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from helpers import checks
from helpers.data import collate_preferences, tokenize_preferences
from helpers.logprobs import IGNORE_INDEX, concatenated_forward, sequence_logprobs, token_logprobs
from helpers.losses import dpo_loss
from helpers.world import load_sft_model, load_tokenizer, start_notebook

world, device = start_notebook(seed=0)  # quiet transformers, seed, profile (DPO_PROFILE), device, threads
tokenizer = load_tokenizer(world)
model = load_sft_model(world, device=device)  # eval mode: dropout off
print(f"profile {world.profile} on {device}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
      f"vocabulary {len(tokenizer)}, eos id {tokenizer.eos_token_id}, pad id {tokenizer.pad_token_id}")

# %% [markdown]
# ## 1. Prompt and response, tokenized separately
#
# A preference record is text: a prompt and a response that continues it. We tokenize the two
# **separately** and concatenate the ids (section 7b shows why), and append the end-of-sequence
# token to the response: ending is part of the response, and the model must be scored on it.
#
# The **labels** say which tokens are scored: the token id on the response and its EOS, and
# $-100$ (PyTorch's `ignore_index`) on the prompt.

# %%
# NBVAL_CHECK_OUTPUT
prompt = "the acting was"
response = " superb, and the music was lovely."
prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
input_ids = prompt_ids + response_ids
labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids

print(f"{'pos':>3}  {'token':<16}{'id':>6}{'label':>7}  scored")
for t, (i, lab) in enumerate(zip(input_ids, labels)):
    print(f"{t:>3}  {tokenizer.decode([i])!r:<16}{i:>6}{lab:>7}  {'yes' if lab != IGNORE_INDEX else ''}")

# %% [markdown]
# ## 2. The shift: position $t$ predicts token $t+1$
#
# One forward pass over the whole sequence gives logits of shape $(B, T, V)$. The logits at
# position $t$ are the model's distribution over the **next** token, $t+1$. So the log-prob of the
# token at position $t+1$ is read from position $t$: we compare `logits[:, :-1]` with
# `labels[:, 1:]`, and the result has $T-1$ entries. The first prompt token is never predicted (no
# context), and the logits after the EOS are never used.

# %%
# NBVAL_CHECK_OUTPUT
ids = torch.tensor([input_ids], device=device)  # (1, T)
lab = torch.tensor([labels], device=device)  # (1, T)
with torch.no_grad():
    logits = model(input_ids=ids).logits  # (1, T, V)
print("input_ids", tuple(ids.shape), "-> logits", tuple(logits.shape), "-> scored positions", tuple(lab[:, 1:].shape))

# %% [markdown]
# The log-prob of each response token, read from the position before it (these numbers depend on
# the trained model, so they are not compared when the notebook is tested):

# %%
logprobs_all = F.log_softmax(logits[0, :-1].float(), dim=-1)  # (T-1, V): row t is pi(. | tokens 0..t)
print(f"\n{'from pos':>8}  {'context ends with':<18} {'next token':<14}{'log pi':>8}")
for t in range(len(input_ids) - 1):
    target = lab[0, t + 1].item()
    if target == IGNORE_INDEX:
        note = "(prompt: not scored)"
        print(f"{t:>8}  {tokenizer.decode([input_ids[t]])!r:<18} {tokenizer.decode([input_ids[t + 1]])!r:<14}{note:>8}")
        continue
    lp = logprobs_all[t, target].item()
    print(f"{t:>8}  {tokenizer.decode([input_ids[t]])!r:<18} {tokenizer.decode([target])!r:<14}{lp:8.2f}")


# %% [markdown]
# ## 3. Log-softmax, gather, mask, sum
#
# In tensor form, for a whole batch at once:
#
# 1. `logits[:, :-1]` and `labels[:, 1:]` (the shift);
# 2. `log_softmax` over the vocabulary, **in float32** (section 7d);
# 3. `gather` the log-prob of each label along the vocabulary dimension (a `-100` is not a valid
#    index, so replace it by 0 first and zero the result afterwards);
# 4. multiply by the mask `labels != -100` and sum over tokens.
#
# ### Exercise 1 — `sequence_logprobs`
#
# Write `sequence_logprobs(logits, labels)` for `logits` of shape $(B, T, V)$ and `labels` of shape
# $(B, T)$, returning the $(B,)$ summed log-probs. The checker tries it on random inputs, including
# bf16 logits, and names the mistake if there is one.

# %%
def my_sequence_logprobs(logits, labels):
    # YOUR CODE HERE: (B, T, V) logits and (B, T) labels -> (B,) log-probs of the labelled tokens
    raise NotImplementedError


checks.check_sequence_logprobs(my_sequence_logprobs)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def my_sequence_logprobs(logits, labels):
    logits = logits[:, :-1, :].float()  # (B, T-1, V): position t predicts token t+1
    labels = labels[:, 1:]  # (B, T-1)
    mask = labels != IGNORE_INDEX
    safe_labels = labels.masked_fill(~mask, 0)  # a valid index for gather; zeroed below
    per_token = torch.gather(F.log_softmax(logits, dim=-1), 2, safe_labels.unsqueeze(2)).squeeze(2)
    return (per_token * mask).sum(-1)  # (B,)


print(checks.check_sequence_logprobs(my_sequence_logprobs))
ours = my_sequence_logprobs(logits, lab)
print("equals helpers.logprobs.sequence_logprobs:", torch.allclose(ours, sequence_logprobs(logits, lab)))

# %% [markdown]
# <details><summary><b>Why it works</b> (open after the solution)</summary>
#
# The solution is the same lines as `helpers.logprobs.sequence_logprobs`, which the rest of the
# course uses.
#
# </details>

# %%
print(f"log pi(y|x) = {ours.item():.4f}")
print(f"pi(y|x)     = {math.exp(ours.item()):.3g}")


# %% [markdown]
# The probability of a whole response is tiny even for a fluent one: it is a product of many
# per-token probabilities. That is why everything is done in log space.
#
# ## 4. Check against a naive loop
#
# The vectorised version must equal the definition computed the slow way: one forward pass per
# prefix $x, y_{<t}$, reading the last position's distribution, with no shifting and no masking to
# get wrong. (Each prefix is a fresh forward pass, so this also checks that one pass with the causal
# mask sees exactly what a prefix-only pass sees.)

# %%
# NBVAL_CHECK_OUTPUT
def naive_logprob(model, prompt_ids, response_ids):
    total, context = 0.0, list(prompt_ids)
    for token in response_ids:
        with torch.no_grad():
            next_logits = model(input_ids=torch.tensor([context], device=device)).logits[0, -1]
        total += torch.log_softmax(next_logits.double(), -1)[token].item()
        context.append(token)
    return total


naive = naive_logprob(model, prompt_ids, response_ids)
print("naive loop == vectorised (to 1e-4 nats):", abs(naive - ours.item()) < 1e-4)

# %%
print(f"naive loop : {naive:.4f}\nvectorised : {ours.item():.4f}")

# %% [markdown]
# ## 5. Sum, not mean
#
# DPO uses the **sum** over response tokens, as in the paper and its reference implementation: the
# derivation is about $\pi(y\mid x)$, the probability of the whole response, and
# $\log\pi(y\mid x)$ is a sum. The implicit reward $\hat r(x,y) = \beta\log\frac{\pi_\theta(y\mid x)}{\pi_{\mathrm{ref}}(y\mid x)}$
# is then a sum of per-token log-ratios (notebook 07 draws them).
#
# Averaging per token (IPO as implemented in TRL, SimPO) is a different objective: each response's
# log-ratio is divided by its own length, so $\beta$ is effectively $\beta/|y|$ and differs between
# the chosen and the rejected response. A per-token mean also hides the length effect: a sum falls
# with every token, a mean does not. The two responses below differ mostly in length.

# %%
records = [
    {"prompt": "the acting was", "chosen": " superb.", "rejected": " superb, and the music was lovely."},
]
examples = tokenize_preferences(records, tokenizer, max_length=64, max_prompt_length=16)
batch = collate_preferences(examples, tokenizer.pad_token_id)
with torch.no_grad():
    out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
total = sequence_logprobs(out, batch["labels"].to(device))
mean = sequence_logprobs(out, batch["labels"].to(device), average=True)
n_scored = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(-1)
for name, row in (("short", 0), ("long", 1)):
    print(f"{name:>5}: {n_scored[row].item():2d} scored tokens, sum {total[row].item():7.3f}, mean {mean[row].item():6.3f}")

# %% [markdown]
# ## 6. Padding and the concatenated batch
#
# A batch holds responses of different lengths, so rows are right-padded to the longest. Padding
# must change nothing: the attention mask keeps real tokens from attending to pads (and with right
# padding the real tokens come first, so their positions are unchanged), and the labels are $-100$
# on every pad.
#
# DPO scores each pair's chosen **and** rejected response under the policy. Rather than two
# forward passes, the reference implementation stacks them into one batch of $2B$ rows, chosen
# first: `helpers.data.collate_preferences` builds it and `helpers.logprobs.concatenated_forward`
# splits the result. Below: three pairs, the $(6, T)$ batch, and a check that one padded pass
# gives the same log-probs as six unpadded, separate passes.

# %%
# NBVAL_CHECK_OUTPUT
records = [
    {"prompt": "the acting was", "chosen": " superb.", "rejected": " dull."},
    {"prompt": "the music", "chosen": " was lovely, and the ending was great.", "rejected": " was bad."},
    {"prompt": "i loved", "chosen": " the story.", "rejected": " nothing about it, sadly."},
]
examples = tokenize_preferences(records, tokenizer, max_length=64, max_prompt_length=16)
batch = collate_preferences(examples, tokenizer.pad_token_id)
print({k: tuple(v.shape) for k, v in batch.items()}, "(2B, T) with B = 3: rows 0-2 chosen, 3-5 rejected")
print("attention_mask:")
print(batch["attention_mask"])
print("labels (-100 = not scored; prompt on the left, padding on the right):")
print(batch["labels"])

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    chosen_logps, rejected_logps = concatenated_forward(model, {k: v.to(device) for k, v in batch.items()})
separate = []
for ex in examples:
    for key in ("chosen", "rejected"):
        n_prompt = len(ex["prompt_input_ids"])
        separate.append(naive_logprob(model, ex["prompt_input_ids"], ex[f"{key}_input_ids"][n_prompt:]))
separate = torch.tensor(separate, dtype=torch.float64).view(3, 2)
print("one padded concatenated pass == separate naive loops:",
      torch.allclose(chosen_logps.cpu().double(), separate[:, 0], atol=1e-4)
      and torch.allclose(rejected_logps.cpu().double(), separate[:, 1], atol=1e-4))

# %%
print("chosen  :", [f"{v:.3f}" for v in chosen_logps.tolist()])
print("rejected:", [f"{v:.3f}" for v in rejected_logps.tolist()])

# %% [markdown]
# ## 7. The traps, shown
#
# ### 7a. pad = eos hides the EOS
#
# GPT-2 has no padding token, and the usual fix is `tokenizer.pad_token = tokenizer.eos_token`.
# From then on, any mask built as `input_ids != pad_token_id` also removes the EOS that ends each
# response: the EOS is never scored, the model is never taught to stop, and DPO cannot prefer a
# response for ending well. (The tiny world gives its tokenizer a separate pad token; here we pad
# with the EOS id on purpose, as GPT-2 code does.)

# %%
# NBVAL_CHECK_OUTPUT
eos = tokenizer.eos_token_id
batch_eos = collate_preferences(examples, pad_token_id=eos)  # pad = eos, as with GPT-2
right = batch_eos["labels"]  # helpers.data decides from lengths: EOS scored, pads -100
wrong = right.masked_fill(batch_eos["input_ids"] == eos, IGNORE_INDEX)  # "mask the pads" by id
row = 3  # the first rejected response
show = lambda t: [tokenizer.decode([i]) if i != IGNORE_INDEX else "·" for i in t.tolist()]
print("input ids  :", show(batch_eos["input_ids"][row]))
print("right mask :", show(right[row]))
print("by pad id  :", show(wrong[row]))
print(f"scored tokens per row: right {(right[:, 1:] != IGNORE_INDEX).sum(-1).tolist()}, "
      f"by pad id {(wrong[:, 1:] != IGNORE_INDEX).sum(-1).tolist()}")

# %%
with torch.no_grad():
    lg = model(input_ids=batch_eos["input_ids"].to(device), attention_mask=batch_eos["attention_mask"].to(device)).logits
lp_right = sequence_logprobs(lg, right.to(device))
lp_wrong = sequence_logprobs(lg, wrong.to(device))
print(f"log pi(EOS | x, y) that the wrong mask drops, per row: {[f'{v:.2f}' for v in (lp_right - lp_wrong).tolist()]}")


# %% [markdown]
# ### Exercise 2 — labels from lengths
#
# Write `response_labels(input_ids, prompt_length, length)` for one row `input_ids` of shape $(T,)$
# (prompt, response, EOS, then padding with pad = eos): return labels of shape $(T,)$ equal to the
# token id on the response and its EOS, $-100$ on the prompt and the padding. Decide by positions,
# not by comparing ids with the pad id.

# %%
def response_labels(input_ids, prompt_length, length):
    # YOUR CODE HERE
    raise NotImplementedError


checks.check_response_labels(response_labels)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def response_labels(input_ids, prompt_length, length):
    positions = torch.arange(len(input_ids))
    scored = (positions >= prompt_length) & (positions < length)
    return torch.where(scored, input_ids, torch.full_like(input_ids, IGNORE_INDEX))


print(checks.check_response_labels(response_labels))
ex = examples[0]
n_prompt, n_real = len(ex["prompt_input_ids"]), len(ex["rejected_input_ids"])
print("equals helpers.data's labels:",
      torch.equal(response_labels(batch_eos["input_ids"][row], n_prompt, n_real), right[row]))

# %% [markdown]
# ### 7b. BPE merges at the prompt/response boundary
#
# GPT-2's byte-level BPE attaches the space before a word to the word: `" great"` is one token. If a
# prompt ends with a space and the response starts without one, tokenizing the *joined* text
# merges across the boundary, and the first $|x|$ tokens of the joined ids are no longer the
# prompt. A mask computed from the prompt's own token count is then off by a token.

# %%
# NBVAL_CHECK_OUTPUT
prompt_sp, response_sp = "the acting was ", "great."
p_ids = tokenizer(prompt_sp, add_special_tokens=False)["input_ids"]
r_ids = tokenizer(response_sp, add_special_tokens=False)["input_ids"]
joined = tokenizer(prompt_sp + response_sp, add_special_tokens=False)["input_ids"]
print("prompt alone   :", [tokenizer.decode([i]) for i in p_ids])
print("response alone :", [tokenizer.decode([i]) for i in r_ids])
print("joined text    :", [tokenizer.decode([i]) for i in joined])
print(f"joined ids start with the prompt ids: {joined[:len(p_ids)] == p_ids}")
print(f"masking the first {len(p_ids)} joined tokens scores only:",
      [tokenizer.decode([i]) for i in joined[len(p_ids):]])

# %% [markdown]
# Two fixes, both used in this course. **Fix 1**: tokenize prompt and response separately and
# concatenate the ids (`helpers.data.tokenize_preference`), so the mask scores exactly the response's
# own ids. That makes the *mask* exact -- but look at which ids it scores: the separate pieces are a
# tokenization of the text the model would not write itself, and the log-probability of a token
# sequence depends on the sequence, not only on the text. **Fix 2**: cut prompts at word boundaries
# with no trailing space, so the response starts with its own space (`helpers.world.make_prompt`)
# and separate tokenization *equals* joint tokenization. Both, measured on the SFT model:

# %%
# NBVAL_CHECK_OUTPUT
def text_logp(ids: list[int]) -> float:
    """log pi of every token after the first, under the model: one tokenization of one text."""
    x = torch.tensor([ids], device=device)
    labels = x.clone()
    labels[0, 0] = IGNORE_INDEX
    with torch.no_grad():
        return sequence_logprobs(model(input_ids=x).logits.float(), labels).item()


print(f"fix 1, separate ids {[tokenizer.decode([i]) for i in p_ids + r_ids][-4:]}: "
      f"log pi = {text_logp(p_ids + r_ids):.2f} nats")
print(f"       joined ids   {[tokenizer.decode([i]) for i in joined][-4:]}: log pi = {text_logp(joined):.2f} nats "
      "(the same text)")
p2, r2 = "the acting was", " great."
p2_ids, r2_ids = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (p2, r2))
joined2 = tokenizer(p2 + r2, add_special_tokens=False)["input_ids"]
print(f"fix 2, no trailing space: separate ids == joined ids: {p2_ids + r2_ids == joined2}, "
      f"log pi = {text_logp(p2_ids + r2_ids):.2f} and {text_logp(joined2):.2f} nats")

# %% [markdown]
# So fix 1 alone scores the right positions of a *non-canonical* tokenization, whose probability
# differs from the canonical one's by the gap printed above; only with fix 2 are the ids DPO scores
# the ids the model itself would produce for that text.
#
# ### 7c. Dropout left on in the reference
#
# $\pi_{\mathrm{ref}}$ is a fixed function. A model in train mode applies dropout, so two forward
# passes over the same input give different log-probs, and at step 0 (policy = reference) the DPO
# loss is not $\ln 2$. GPT-2 from the hub ships with dropout 0.1 (our tiny model was saved without),
# so we load the SFT model with GPT-2's dropout to show it.

# %%
with_dropout = AutoModelForCausalLM.from_pretrained(world.sft_dir, resid_pdrop=0.1, embd_pdrop=0.1,
                                                    attn_pdrop=0.1).to(device)

# %%
# NBVAL_CHECK_OUTPUT
b = {k: v.to(device) for k, v in batch.items()}
torch.manual_seed(0)
with_dropout.train()
with torch.no_grad():
    first = concatenated_forward(with_dropout, b)
    second = concatenated_forward(with_dropout, b)
print("train mode, two passes agree:", torch.allclose(first[0], second[0], atol=1e-4))
loss_train = dpo_loss(*first, *second, beta=0.1)[0].mean()
with_dropout.eval()
with torch.no_grad():
    first = concatenated_forward(with_dropout, b)
    second = concatenated_forward(with_dropout, b)
print("eval mode,  two passes agree:", torch.allclose(first[0], second[0], atol=1e-4))
loss_eval = dpo_loss(*first, *second, beta=0.1)[0].mean()
print(f"DPO loss at step 0 (policy = reference): eval mode {loss_eval.item():.4f}, ln 2 = {math.log(2):.4f}")
print(f"with dropout on, the step-0 loss differs from ln 2: {abs(loss_train.item() - math.log(2)) > 1e-4}")

# %% [markdown]
# So: the reference always runs in `eval()` mode under `torch.no_grad()`
# (`helpers.train.freeze_reference`), and, as in the DPO reference code and TRL, the policy's
# dropout is switched off too (`disable_dropout`), so $\pi_\theta = \pi_{\mathrm{ref}}$ exactly at
# step 0 and the loss starts at $\ln 2$.
#
# ### 7d. Low-precision logits
#
# On a GPU the forward pass runs in reduced precision. float16 and bfloat16 keep 11 and 8
# significant bits, so a logit of magnitude 100 is rounded to a multiple of 1/16 (fp16) or 1/2
# (bf16). log-softmax is invariant to adding a constant to all logits — in exact arithmetic. GPT-2's
# logits are large negative numbers; our tiny model's are small, so below we add a constant $c$ to
# them (which changes nothing mathematically) and measure the error of $\log\pi(y\mid x)$ when the
# logits are rounded to fp16 or bf16 before a float32 log-softmax.

# %%
with torch.no_grad():
    lg = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
exact = sequence_logprobs(lg.double(), b["labels"])
print(f"{'shift c':>8} {'fp16 error':>11} {'bf16 error':>11}   (max over 6 responses, nats)")
for c in (0.0, -30.0, -100.0):
    err16 = (sequence_logprobs((lg + c).half(), b["labels"]) - exact).abs().max().item()
    errbf = (sequence_logprobs((lg + c).bfloat16(), b["labels"]) - exact).abs().max().item()
    print(f"{c:8.0f} {err16:11.3f} {errbf:11.3f}")
keep = b["labels"][:, 1:] != IGNORE_INDEX
for c in (0.0, -30.0, -100.0):  # the log-softmax itself in fp16, on top of the rounding of the logits
    in_half = torch.gather(F.log_softmax((lg[:, :-1] + c).half(), -1), 2,
                           b["labels"][:, 1:].clamp(min=0).unsqueeze(2)).squeeze(2)
    in_half = (in_half.float() * keep).sum(-1)
    print(f"log-softmax computed in fp16 itself, c = {c:4.0f}: error {(in_half - exact).abs().max().item():.3f} nats")

# %% [markdown]
# What this means in practice, and what the course does:
#
# * **Always log-softmax in float32.** `helpers.logprobs.token_logprobs` upcasts the logits
#   (`.float()`) before the log-softmax. Compare the last lines above with the fp16 column: on
#   these logits the fp16 log-softmax costs about what rounding its input to fp16 costs, and that
#   rounding is the error to watch -- the upcast is free, and leaves it the only one.
# * **Never fp16.** fp16's range ends at 65504, so large activations overflow, and it needs a loss
#   scaler; `helpers.config.autocast` uses bf16 on CUDA GPUs with *native* bf16 (compute capability
#   8.0 and newer: A100, L4, H100) and float32 elsewhere -- a T4 or V100 (whose bf16 is emulated,
#   slower than float32) and a CPU.
# * **The rounding of the logits themselves remains under bf16 autocast**, and it grows with the
#   logits' magnitude (the table above). Early in DPO training the policy/reference log-ratios are
#   small, so this noise can be as large as the signal. When a bf16 result looks noisy, rerun the
#   same cell in float32 (on a CPU, or without autocast) before blaming the method.
#
# ## Summary
#
# * $\log\pi(y\mid x)$ = sum over response tokens (EOS included) of the log-prob read from the
#   *previous* position: shift, float32 log-softmax, gather, mask, sum.
# * Labels come from lengths: $-100$ on the prompt and the padding, never decided by the pad id.
# * Prompt and response are tokenized separately; the reference runs without dropout.
# * One concatenated forward over chosen and rejected rows gives exactly the separate results.
#
# Next, **05**: the SFT model that served as $\pi_{\mathrm{ref}}$ here — why DPO needs it, and
# how it is trained.
