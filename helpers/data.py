"""Preference records -> token ids with prompt masking -> padded, concatenated batches.

A preference record is ``{"prompt": str, "chosen": str, "rejected": str}``. The response texts
should carry their own leading separator (``" great film."`` after ``"The movie was"``), exactly
as the text would continue.

Three traps this module avoids, each tested:
  * **BPE merges at the boundary.** Tokenizing ``prompt + response`` as one string can merge the
    last prompt characters with the first response characters, so a mask computed from the
    prompt's own length would be off by a token. We tokenize the two parts separately and
    concatenate the ids.
  * **pad = eos masks the EOS.** GPT-2 has no pad token and people set ``pad = eos``; deciding
    what counts from ``input_ids != pad_id`` then also hides the EOS that ends each response, so
    the model is never taught to stop. We append EOS to every response that ended (all of them,
    unless a record says ``chosen_ended``/``rejected_ended`` = false for a sample cut at its length
    limit: that one is scored as generated), score it, and decide what counts from lengths
    (attention mask and labels), never from the pad id.
  * **Silent loss of data.** Malformed records raise ``ValueError`` naming the record and field,
    or, with ``on_invalid="drop"``, are dropped and every drop is counted and reported.
"""

from __future__ import annotations

import warnings

import torch

from helpers.logprobs import IGNORE_INDEX

FIELDS = ("prompt", "chosen", "rejected")


def _record_problem(i: int, record) -> str | None:
    """The first thing wrong with record i, as a message naming the record and field, or None."""
    if not isinstance(record, dict):
        return f"record {i}: expected a dict with keys {FIELDS}, got {type(record).__name__}"
    for name in FIELDS:
        if name not in record:
            return f"record {i}: missing field {name!r}"
        value = record[name]
        if not isinstance(value, str):
            return f"record {i}: field {name!r} must be a string, got {type(value).__name__}"
        if not value.strip():
            return f"record {i}: field {name!r} is empty"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:  # a lone surrogate ("\ud800") survives JSON but not a tokenizer
            return f"record {i}: field {name!r} is not valid Unicode text ({err.reason} at character {err.start})"
    for name in ("chosen_ended", "rejected_ended"):
        if name in record and not isinstance(record[name], bool):
            return f"record {i}: field {name!r} must be true or false, got {type(record[name]).__name__}"
    if record["chosen"] == record["rejected"]:
        return f"record {i}: field 'rejected' equals 'chosen' (a pair must differ)"
    return None


def validate_preference_records(records, on_invalid: str = "raise") -> tuple[list[dict], list[tuple[int, str]]]:
    """Check every record has non-empty string prompt/chosen/rejected and chosen != rejected.

    Args:
        records: a sequence of dicts (a list, or a ``datasets.Dataset``).
        on_invalid: ``"raise"`` (default) raises ``ValueError`` at the first bad record;
            ``"drop"`` skips bad records, counts them, and warns once with the count.
    Returns:
        (valid records, dropped) where dropped lists (record index, reason).
    """
    if on_invalid not in ("raise", "drop"):
        raise ValueError(f"on_invalid must be 'raise' or 'drop', got {on_invalid!r}")
    valid, dropped = [], []
    for i, record in enumerate(records):
        problem = _record_problem(i, record)
        if problem is None:
            valid.append(record)
        elif on_invalid == "raise":
            raise ValueError(problem)
        else:
            dropped.append((i, problem))
    if dropped:
        warnings.warn(f"dropped {len(dropped)} of {len(valid) + len(dropped)} records; first: {dropped[0][1]}",
                      stacklevel=2)
    return valid, dropped


def tokenize_preference(
    record: dict,
    tokenizer,
    max_length: int,
    max_prompt_length: int,
    index: int = 0,
) -> dict:
    """Token ids and labels for one validated record.

    Truncation: the prompt keeps its *last* ``max_prompt_length`` tokens (the end of a prompt is
    what the response continues), then each response (with its EOS) is cut on the right to fit
    ``max_length``. A response never ends up empty: if the prompt leaves no room, ValueError.

    Returns:
        dict with ``prompt_input_ids``, ``chosen_input_ids``, ``chosen_labels``,
        ``rejected_input_ids``, ``rejected_labels`` (lists of int; labels are -100 on the prompt).
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id: responses must end with EOS")
    prompt_ids = text_ids(tokenizer, record["prompt"])
    prompt_ids = prompt_ids[-max_prompt_length:] if max_prompt_length > 0 else []
    budget = max_length - len(prompt_ids)
    if not prompt_ids:
        raise ValueError(f"record {index}: field 'prompt' has no tokens after truncation")
    if budget < 1:
        raise ValueError(
            f"record {index}: field 'prompt' leaves no room for the response "
            f"({len(prompt_ids)} prompt tokens, max_length {max_length}); lower max_prompt_length"
        )
    out = {"prompt_input_ids": list(prompt_ids)}
    for name in ("chosen", "rejected"):
        # EOS only for a response that ended: one cut at max_new_tokens is scored as generated
        ended = record.get(f"{name}_ended", True)
        response_ids = text_ids(tokenizer, record[name]) + ([eos] if ended else [])
        out[f"{name}_truncated"] = len(response_ids) > budget  # its end (at least) is cut: not scored
        response_ids = response_ids[:budget]
        out[f"{name}_input_ids"] = list(prompt_ids) + response_ids
        out[f"{name}_labels"] = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    return out


def text_ids(tokenizer, text: str) -> list[int]:
    """Token ids of data text, special-token strings included *as text*.

    A review that contains the characters ``<|endoftext|>`` must not become the EOS token in the
    middle of a response (token injection): ``split_special_tokens=True`` tokenizes them like any
    other characters. EOS is appended by the code, never read from the data.
    """
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def tokenize_preferences(
    records,
    tokenizer,
    max_length: int = 64,
    max_prompt_length: int = 16,
    on_invalid: str = "raise",
    stats: dict | None = None,
) -> list[dict]:
    """Validate and tokenize a dataset of preference records (see ``tokenize_preference``).

    With ``on_invalid="drop"``, records that fail validation, leave no room for a response, or
    become identical after truncation are dropped and counted (a warning says how many and why).

    Args:
        stats: if given, filled with counts: ``records``, ``kept``, ``dropped`` (and ``dropped_reasons``),
            ``truncated_chosen``, ``truncated_rejected`` (responses cut at ``max_length``: their end is
            not scored) -- so a caller can report them.
    """
    if max_prompt_length >= max_length:
        raise ValueError(f"max_prompt_length ({max_prompt_length}) must be below max_length ({max_length})")
    if on_invalid not in ("raise", "drop"):
        raise ValueError(f"on_invalid must be 'raise' or 'drop', got {on_invalid!r}")
    examples, dropped = [], []
    for i, record in enumerate(records):
        problem = _record_problem(i, record)
        try:
            if problem is not None:
                raise ValueError(problem)
            example = tokenize_preference(record, tokenizer, max_length, max_prompt_length, index=i)
            if example["chosen_input_ids"] == example["rejected_input_ids"]:
                raise ValueError(f"record {i}: 'chosen' and 'rejected' are identical after truncation to "
                                 f"max_length {max_length} (they differ only later): the pair carries no signal")
            examples.append(example)
        except ValueError as err:
            if on_invalid == "raise":
                raise
            dropped.append(str(err))
    if dropped:
        warnings.warn(f"dropped {len(dropped)} of {len(dropped) + len(examples)} records; first: {dropped[0]}",
                      stacklevel=2)
    if stats is not None:
        stats.update(records=len(examples) + len(dropped), kept=len(examples), dropped=len(dropped),
                     dropped_reasons=list(dropped),
                     truncated_chosen=sum(ex["chosen_truncated"] for ex in examples),
                     truncated_rejected=sum(ex["rejected_truncated"] for ex in examples))
    return examples


def pad_token_id_of(tokenizer) -> int:
    """The id that fills padding: the tokenizer's pad token, else its EOS (GPT-2 has no pad token).

    Only ever fills space: attention masks and labels come from the true lengths, so a pad equal to
    EOS never hides a real EOS (notebook 04 shows the trap).
    """
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def pad_rows(rows: list[list[int]], pad_value: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token rows of different lengths into one (B, T) long tensor, T = the longest row.

    Args:
        rows: B lists of ints (token ids, or labels).
        pad_value: what fills the padding (a pad id, or ``IGNORE_INDEX`` for labels).
        side: "right" (training and scoring: every row starts at position 0) or "left" (generation:
            every prompt ends where the new tokens start).
    Returns:
        (values, attention_mask): (B, T) long each; the mask is 1 on real entries, 0 on padding.
    """
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    width = max(len(r) for r in rows)
    values = torch.full((len(rows), width), pad_value, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        if not row:
            continue
        cols = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        values[i, cols] = torch.tensor(row, dtype=torch.long)
        mask[i, cols] = 1
    return values, mask


def collate_preferences(examples: list[dict], pad_token_id: int) -> dict:
    """Right-pad B tokenized pairs into one concatenated batch of 2B rows, chosen first.

    The pad id only fills space: the attention mask and labels come from the true lengths, so a
    pad id equal to EOS cannot hide the EOS (it is still scored).

    Returns:
        ``input_ids``, ``attention_mask``, ``labels``: (2B, T) long tensors, rows 0..B-1 chosen,
        B..2B-1 rejected (what ``helpers.logprobs.concatenated_forward`` expects).
    """
    ids = [ex["chosen_input_ids"] for ex in examples] + [ex["rejected_input_ids"] for ex in examples]
    labs = [ex["chosen_labels"] for ex in examples] + [ex["rejected_labels"] for ex in examples]
    input_ids, attention_mask = pad_rows(ids, pad_token_id)  # (2B, T)
    labels, _ = pad_rows(labs, IGNORE_INDEX)  # (2B, T)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def load_preference_file(path, on_invalid: str = "raise") -> list[dict]:
    """Preference records from a ``.jsonl`` file (one JSON object per line) or a ``.json`` file (a
    list of objects), every problem reported by file, line and field -- never a library traceback.

    Checked here: the file exists and is not empty; it is UTF-8 (the message gives the line and
    the byte); every line (``.jsonl``) or the whole file (``.json``) is JSON; every record has
    string ``prompt``/``chosen``/``rejected`` fields that are valid Unicode, non-empty and differ
    (``validate_preference_records``). Blank lines in a ``.jsonl`` file are skipped (a trailing
    newline is common), and so is a UTF-8 byte-order mark at the start (Notepad and Excel write one);
    nothing else is.

    Args:
        on_invalid: ``"raise"`` (the first bad line or record stops the load, named) or ``"drop"``
            (every bad line or record is left out, and the count and the first few are printed).
    Raises:
        ValueError: ``"<file> line <n>: <what>"`` (or ``"<file>: <what>"``).
    """
    import codecs
    import json
    from pathlib import Path

    if on_invalid not in ("raise", "drop"):
        raise ValueError(f"on_invalid must be 'raise' or 'drop', got {on_invalid!r}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    raw = path.read_bytes()
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = raw[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: bom + err.start].count(b"\n") + 1
        raise ValueError(f"{path} line {line}: not UTF-8 text (byte {raw[bom + err.start]:#04x} at offset "
                         f"{bom + err.start}); save the file as UTF-8") from None
    if not text.strip():
        raise ValueError(f"{path}: the file is empty (expected preference records "
                         f'{{"prompt": ..., "chosen": ..., "rejected": ...}})')
    records, lines, dropped = [], [], []

    def bad(message: str) -> None:
        if on_invalid == "raise":
            raise ValueError(message)
        dropped.append(message)

    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {err.lineno}: not JSON ({err.msg}, column {err.colno}); a .json "
                             f"file holds a list of records, a .jsonl file one record per line") from None
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of records, got a {type(data).__name__}")
        records, lines = data, [None] * len(data)
    else:
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                hint = " (the last line is cut short?)" if n == len(text.splitlines()) else ""
                bad(f"{path} line {n}: not JSON ({err.msg}, column {err.colno}){hint}; each line "
                    f"must be one record {{\"prompt\": ..., \"chosen\": ..., \"rejected\": ...}}")
                continue
            lines.append(n)
    kept = []
    for i, record in enumerate(records):
        problem = _record_problem(i, record)
        if problem is not None:
            where = f"line {lines[i]} " if lines[i] is not None else ""
            bad(f"{path} {where}({problem})")
            continue
        kept.append(record)
    if dropped:
        print(f"{path}: dropped {len(dropped)} invalid lines or records (--on-invalid drop), kept {len(kept)}; "
              "first: " + " | ".join(dropped[:3]))
    return kept
