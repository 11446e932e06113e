"""Preference records: validation errors, prompt masking, EOS scoring, truncation, collate."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.data import collate_preferences, tokenize_preference, tokenize_preferences, validate_preference_records
from helpers.logprobs import IGNORE_INDEX

GOOD = {"prompt": "The movie was", "chosen": " great.", "rejected": " dull."}


@pytest.mark.parametrize(
    "record, field, message",
    [
        ({"prompt": "The movie", "chosen": " good"}, "rejected", "missing field 'rejected'"),
        ({"prompt": "The movie", "chosen": 3, "rejected": " bad"}, "chosen", "must be a string"),
        ({"prompt": "The movie", "chosen": "", "rejected": " bad"}, "chosen", "is empty"),
        ({"prompt": "The movie", "chosen": " ok", "rejected": "   "}, "rejected", "is empty"),
        ({"prompt": None, "chosen": " ok", "rejected": " bad"}, "prompt", "must be a string"),
        ({"prompt": "The movie", "chosen": " same", "rejected": " same"}, "rejected", "equals 'chosen'"),
    ],
)
def test_bad_records_raise_naming_index_and_field(tiny_tokenizer, record, field, message):
    records = [GOOD, GOOD, record]
    with pytest.raises(ValueError) as err:
        tokenize_preferences(records, tiny_tokenizer)
    assert "record 2" in str(err.value) and repr(field) in str(err.value) and message in str(err.value)
    with pytest.raises(ValueError, match="record 2"):
        validate_preference_records(records)


def test_not_a_dict_raises(tiny_tokenizer):
    with pytest.raises(ValueError, match="record 0: expected a dict"):
        tokenize_preferences(["just a string"], tiny_tokenizer)


def test_prompt_leaving_no_room_raises(tiny_tokenizer):
    long_prompt = {"prompt": "The movie was great and the acting was superb " * 3, "chosen": " yes", "rejected": " no"}
    n_prompt = len(tiny_tokenizer(long_prompt["prompt"])["input_ids"])
    with pytest.raises(ValueError, match="record 0: field 'prompt' leaves no room"):
        tokenize_preference(long_prompt, tiny_tokenizer, max_length=n_prompt, max_prompt_length=n_prompt + 5)
    with pytest.raises(ValueError, match="must be below max_length"):
        tokenize_preferences([long_prompt], tiny_tokenizer, max_length=8, max_prompt_length=8)


def test_drop_policy_counts_and_reports(tiny_tokenizer):
    bad = {"prompt": "The movie", "chosen": " same", "rejected": " same"}
    with pytest.warns(UserWarning, match="dropped 2 of 4 records"):
        examples = tokenize_preferences([GOOD, bad, GOOD, {"prompt": "x"}], tiny_tokenizer, on_invalid="drop")
    assert len(examples) == 2
    with pytest.warns(UserWarning, match="dropped 1 of 3"):
        valid, dropped = validate_preference_records([GOOD, bad, GOOD], on_invalid="drop")
    assert len(valid) == 2 and dropped[0][0] == 1 and "'rejected'" in dropped[0][1]


def test_prompt_and_response_tokenized_separately(tiny_tokenizer):
    ex = tokenize_preference(GOOD, tiny_tokenizer, max_length=64, max_prompt_length=16)
    prompt_ids = tiny_tokenizer(GOOD["prompt"], add_special_tokens=False)["input_ids"]
    response_ids = tiny_tokenizer(GOOD["chosen"], add_special_tokens=False)["input_ids"]
    assert ex["prompt_input_ids"] == prompt_ids
    assert ex["chosen_input_ids"] == prompt_ids + response_ids + [tiny_tokenizer.eos_token_id]
    assert ex["chosen_labels"] == [IGNORE_INDEX] * len(prompt_ids) + response_ids + [tiny_tokenizer.eos_token_id]


def test_boundary_merge_would_shift_the_mask(tiny_tokenizer):
    # "The movie wa" + "s great": tokenized jointly, BPE merges across the boundary, so the joint
    # ids do not start with the prompt's own ids -- a mask from len(prompt_ids) would be wrong.
    record = {"prompt": "The movie wa", "chosen": "s great.", "rejected": "s dull."}
    joint = tiny_tokenizer(record["prompt"] + record["chosen"])["input_ids"]
    prompt_ids = tiny_tokenizer(record["prompt"])["input_ids"]
    assert joint[: len(prompt_ids)] != prompt_ids
    ex = tokenize_preference(record, tiny_tokenizer, max_length=64, max_prompt_length=16)
    assert ex["chosen_input_ids"][: len(prompt_ids)] == prompt_ids  # ours keeps the boundary


def test_eos_scored_even_when_pad_equals_eos(tiny_tokenizer):
    ex = tokenize_preferences([GOOD, {"prompt": "The movie was", "chosen": " a long long long tale.", "rejected": " no."}],
                              tiny_tokenizer)
    eos = tiny_tokenizer.eos_token_id
    batch = collate_preferences(ex, pad_token_id=eos)  # the trap: pad = eos
    for r in range(4):
        n = int(batch["attention_mask"][r].sum())
        assert batch["labels"][r, n - 1].item() == eos  # the real EOS is a label
        assert (batch["labels"][r, n:] == IGNORE_INDEX).all()  # the padding (also eos ids) is not
    # the naive rule "score where input_ids != pad" would have dropped every EOS
    naive_scored = batch["input_ids"] != eos
    assert not (naive_scored & (batch["labels"] == eos)).any()


def test_collate_layout(tiny_tokenizer):
    ex = tokenize_preferences([GOOD, GOOD, {"prompt": "I did not like", "chosen": " it", "rejected": " the ending"}],
                              tiny_tokenizer)
    b = collate_preferences(ex, tiny_tokenizer.pad_token_id)
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape
    assert b["input_ids"].shape[0] == 6
    assert b["input_ids"][0].tolist()[: len(ex[0]["chosen_input_ids"])] == ex[0]["chosen_input_ids"]
    assert b["input_ids"][3].tolist()[: len(ex[0]["rejected_input_ids"])] == ex[0]["rejected_input_ids"]
    assert b["attention_mask"].sum(-1).tolist() == [len(e["chosen_input_ids"]) for e in ex] + [
        len(e["rejected_input_ids"]) for e in ex]


WORDS = ["movie", "great", "plot", "dull", "acting", "not", "bad", "music", "the", "was", "ending", "superb"]
text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=25).map(lambda ws: " " + " ".join(ws))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=text, chosen=text, rejected=text, max_length=st.integers(8, 48), max_prompt_length=st.integers(1, 7))
def test_mask_scores_exactly_response_and_eos(tiny_tokenizer, prompt, chosen, rejected, max_length, max_prompt_length):
    if chosen == rejected:
        rejected = rejected + " bad"
    record = {"prompt": prompt.strip(), "chosen": chosen, "rejected": rejected}
    ex = tokenize_preference(record, tiny_tokenizer, max_length=max_length, max_prompt_length=max_prompt_length)
    prompt_ids = tiny_tokenizer(record["prompt"], add_special_tokens=False)["input_ids"][-max_prompt_length:]
    assert ex["prompt_input_ids"] == prompt_ids
    for name in ("chosen", "rejected"):
        ids, labels = ex[f"{name}_input_ids"], ex[f"{name}_labels"]
        full_response = tiny_tokenizer(record[name], add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
        kept = full_response[: max_length - len(prompt_ids)]
        assert len(ids) == len(labels) <= max_length
        assert ids == prompt_ids + kept
        assert labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
        assert labels[len(prompt_ids):] == kept and len(kept) >= 1  # never empty
        assert (tiny_tokenizer.eos_token_id in kept) == (len(full_response) <= max_length - len(prompt_ids))
    batch = collate_preferences([ex], tiny_tokenizer.pad_token_id)
    n_scored = (batch["labels"] != IGNORE_INDEX).sum(-1)
    assert n_scored.tolist() == [len(ex["chosen_input_ids"]) - len(prompt_ids), len(ex["rejected_input_ids"]) - len(prompt_ids)]
    assert torch.equal(batch["attention_mask"].sum(-1), torch.tensor([len(ex["chosen_input_ids"]), len(ex["rejected_input_ids"])]))


def test_pad_rows_right_and_left_against_a_naive_loop():
    from helpers.data import pad_rows

    rows = [[5, 6, 7], [8], [], [1, 2]]
    for side in ("right", "left"):
        values, mask = pad_rows(rows, -1, side=side)
        assert values.shape == mask.shape == (4, 3)
        for i, row in enumerate(rows):
            pad = [-1] * (3 - len(row))
            expect = row + pad if side == "right" else pad + row
            assert values[i].tolist() == expect
            assert mask[i].tolist() == [int(v != -1) for v in expect]
    with pytest.raises(ValueError, match="side"):
        pad_rows(rows, 0, side="middle")


def test_pad_token_id_of_falls_back_to_eos_only_without_a_pad():
    from helpers.data import pad_token_id_of

    class Tok:  # the two attributes pad_token_id_of reads
        def __init__(self, pad, eos):
            self.pad_token_id, self.eos_token_id = pad, eos

    assert pad_token_id_of(Tok(1, 0)) == 1
    assert pad_token_id_of(Tok(0, 0)) == 0
    assert pad_token_id_of(Tok(None, 50256)) == 50256
