"""How the base model is asked: "plain" questions with in-context shots from other records (never
one asking the same question), the earliest shots dropped first when too long; "chat" as SFT."""

import numpy as np
import pytest
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from ilp.data.tokenize import TemplateConfig
from ilp.detection import base_prompts, entities
from ilp.detection.config import DetectConfig
from ilp.typed import ConfigError

WORDS = ["Question:", "Answer:", "user", ":", "assistant"] + [f"{c}{i}" for c in "qa" for i in range(8)]


@pytest.fixture(scope="module")
def tokenizer():
  vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{w: k + 3 for k, w in enumerate(WORDS)}}
  core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
  core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  return transformers.PreTrainedTokenizerFast(
    tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<pad>"
  )


def test_shots_are_other_questions_drawn_per_example():
  ids = [f"e{k}" for k in range(6)]
  prompts = ["q0", "q1", "q1 ", "q3", "q4", "q5"]  # e1 and e2 ask the same question
  chosen = base_prompts.shots(ids, prompts, k=3, seed=0)
  assert all(len(c) == 3 and e not in c for e, c in enumerate(chosen))
  assert 2 not in chosen[1] and 1 not in chosen[2]  # a near-duplicate never gives the answer away
  assert chosen == base_prompts.shots(ids, prompts, k=3, seed=0)
  assert chosen != base_prompts.shots(ids, prompts, k=3, seed=1)


def test_plain_layout_with_shots_and_truncation(tokenizer):
  solved = [("q1", "a1"), ("q2", "a2"), ("q3", "a3")]
  render = base_prompts.renderer("plain", tokenizer, TemplateConfig(), 64, solved, [[1, 2], [0]])
  first, second = render(["q5", "q6"], [0, 1])
  decode = lambda ids: tokenizer.decode(ids)
  assert decode(first) == "<s> Question: q2 Answer: a2 Question: q3 Answer: a3 Question: q5 Answer:"
  assert decode(second) == "<s> Question: q1 Answer: a1 Question: q6 Answer:"
  short = base_prompts.renderer("plain", tokenizer, TemplateConfig(), 8, solved, [[1, 2], [0]])
  assert decode(short(["q5"], [0])[0]) == "<s> Question: q3 Answer: a3 Question: q5 Answer:"  # q2 dropped first
  bare = base_prompts.renderer("plain", tokenizer, TemplateConfig(), 64)
  assert decode(bare(["q5"], [0])[0]) == "<s> Question: q5 Answer:"


def test_chat_is_the_training_template(tokenizer):
  template = TemplateConfig(use_chat_template=False, turn="{role} : {content} ", generation_prefix="assistant :")
  render = base_prompts.renderer("chat", tokenizer, template, 64)
  got = render(["q1", "q2"], [0, 1])
  want = entities.render(["q1", "q2"], tokenizer, template, 64)
  assert all(np.array_equal(g, w) for g, w in zip(got, want))


def test_base_format_settings_are_checked():
  with pytest.raises(ConfigError, match="'base_format': 'instruct' is not one of"):
    DetectConfig(base_format="instruct")
  with pytest.raises(ConfigError, match="'base_shots': is 2, but in-context examples go with base_format='plain'"):
    DetectConfig(base_shots=2)
  assert DetectConfig(base_format="plain", base_shots=2).base_shots == 2
