"""Tokenisation (templates, loss mask, over-long policy) and the planned training stream."""

import dataclasses

import numpy as np
import pytest

from ilp.data import batches
from ilp.data.records import SFTRecord
from ilp.data.tokenize import TemplateConfig, TokenizationError, tokenize_sft
from tests import hf_models

PLAIN = TemplateConfig(use_chat_template=False, turn="{content} ", generation_prefix="w4 ", add_bos=True)


def _record(prompt, response, i=0):
  return SFTRecord(
    id=str(i),
    messages=({"role": "user", "content": prompt}, {"role": "assistant", "content": response}),
    dataset="d",
    phase=1,
    meta={},
  )


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  return hf_models.save_tiny_tokenizer(str(tmp_path_factory.mktemp("tok")))


def test_plain_template_and_response_mask(tokenizer):
  (ex,), report = tokenize_sft([_record("w10 w11", "w20 w21 w22")], tokenizer, 32, PLAIN)
  assert ex.tokens.tolist() == [1, 10, 11, 4, 20, 21, 22, 2] and ex.prompt_length == 4
  arrays = batches.assemble([ex], np.array([0, -1]), 12, pad_id=0)
  supervised = arrays["targets"][0][arrays["loss_mask"][0] == 1]
  assert supervised.tolist() == [20, 21, 22, 2]  # the response and EOS, nothing of the prompt
  assert arrays["mask"][0].sum() == 8 and arrays["mask"][1].sum() == 0 and arrays["loss_mask"][1].sum() == 0
  assert report == {"examples": 1, "truncated": 0, "dropped": 0}


def test_chat_template_is_used_when_present(tokenizer):
  tokenizer.chat_template = (
    "{% for m in messages %}{% if m['role'] == 'user' %}w3 {% endif %}{{ m['content'] }} "
    "{% endfor %}{% if add_generation_prompt %}w4 {% endif %}"
  )
  try:
    (ex,), _ = tokenize_sft([_record("w10", "w20 w21")], tokenizer, 32, TemplateConfig(use_chat_template=True))
  finally:
    tokenizer.chat_template = None
  # Full conversation renders "w3 w10 w20 w21", the prompt "w3 w10 w4": they disagree after the
  # prompt, so the response is tokenised on its own after the template's prompt.
  assert ex.tokens.tolist() == [3, 10, 4, 20, 21, 2] and ex.prompt_length == 3


def test_overlong_policies(tokenizer, caplog):
  records = [_record("w10 w11 w12 w13 w14 w15", "w20 w21", 0), _record("w10", "w20 " * 9, 1), _record("w10", "w20", 2)]
  examples, report = tokenize_sft(records, tokenizer, 8, PLAIN, overlong="truncate_prompt")
  assert report == {"examples": 2, "truncated": 1, "dropped": 1}
  warned = [r for r in caplog.records if r.levelname == "WARNING"]
  assert len(warned) == 1 and "2 over-long example(s) (id '0', id '1')" in warned[0].getMessage()
  assert examples[0].tokens.tolist() == [12, 13, 14, 15, 4, 20, 21, 2] and examples[0].prompt_length == 5
  located = [dataclasses.replace(r, where=f"a.jsonl:{k + 1}") for k, r in enumerate(records)]
  with pytest.raises(TokenizationError, match=r"\(a.jsonl:1 \(id '0'\), a.jsonl:2 \(id '1'\)\)"):
    tokenize_sft(located, tokenizer, 8, PLAIN, overlong="error")
  examples, report = tokenize_sft(records, tokenizer, 8, PLAIN, overlong="drop")
  assert [e.record for e in examples] == [2] and report["dropped"] == 2
  with pytest.raises(
    TokenizationError, match=r"^2 SFT record\(s\) longer than data.max_length=8 tokens \(id '0', id '1'\)"
  ):
    tokenize_sft(records, tokenizer, 8, PLAIN, overlong="error")
  with pytest.raises(TokenizationError, match="data.overlong 'cut'"):
    tokenize_sft(records, tokenizer, 8, PLAIN, overlong="cut")


def test_stream_plan_visits_every_example_once_per_epoch_and_is_seeded():
  lengths = np.random.default_rng(0).integers(3, 30, size=37)
  phases = [batches.PhaseSpec("one", np.arange(0, 20), 2), batches.PhaseSpec("two", np.arange(20, 37), 1)]
  stream = batches.build_stream(lengths, phases, (8, 16, 32), batch_size=4, seed=5, eval_every=3)
  for (phase, epoch), members in (((1, 1), range(20)), ((1, 2), range(20)), ((2, 1), range(20, 37))):
    rows = np.concatenate([b.rows for b in stream.batches if (b.phase, b.epoch) == (phase, epoch)])
    assert sorted(rows[rows >= 0].tolist()) == list(members)
  for b in stream.batches:
    real = b.rows[b.rows >= 0]
    assert (lengths[real] <= b.length).all() and b.length in (8, 16, 32)
  positions = np.concatenate([b.positions[b.rows >= 0] for b in stream.batches])
  np.testing.assert_array_equal(positions, np.arange(57))
  names = [p.name for p in stream.eval_points]
  assert names[0] == "start" and "one/epoch2" in names and names[-1] == "two/epoch1"
  assert len(names) == len(set((p.step, p.name) for p in stream.eval_points))
  same = batches.build_stream(lengths, phases, (8, 16, 32), batch_size=4, seed=5)
  other = batches.build_stream(lengths, phases, (8, 16, 32), batch_size=4, seed=6)
  assert same.fingerprint() == stream.fingerprint() != other.fingerprint()


def test_lm_batch_supervises_every_next_token():
  arrays = batches.lm_batch(np.arange(12, dtype=np.int32).reshape(2, 6))
  assert arrays["targets"][0, :5].tolist() == [1, 2, 3, 4, 5] and arrays["loss_mask"].sum() == 10
