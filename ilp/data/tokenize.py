"""SFT records and raw text -> token ids with a response-only loss mask.

The prompt is rendered with the tokenizer's chat template when it has one (and the config asks
for it), otherwise with a plain template from the config; the response is the final assistant
turn plus EOS. Only response tokens are supervised, so the per-example statistics describe
exactly what SFT was asked to teach.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import numpy as np

from ilp.data.records import CorpusDocument, DataError, SFTRecord
from ilp.typed import check

log = logging.getLogger(__name__)

OVERLONG_POLICIES = ("truncate_prompt", "drop", "error")
LISTED_OVERLONG = 5  # over-long examples named (file:line and id) in the warning or error


class TokenizationError(DataError):
  """The tokenizer or template cannot produce valid training sequences."""


@dataclasses.dataclass(frozen=True)
class TemplateConfig:
  """How a conversation becomes text (config section `data.template`): the tokenizer's chat
  template when it has one and `use_chat_template` is on, else `turn` per message and then
  `generation_prefix`."""

  use_chat_template: bool = True  # use the tokenizer's chat template when it has one
  turn: str = "{role}: {content}\n"  # without a chat template: the text of one message
  generation_prefix: str = "assistant: "  # without one: the text between the prompt's messages and the response
  add_bos: bool = True  # without one: the prompt starts with the tokenizer's BOS (if it has one)

  def __post_init__(self):
    check("{content}" in self.turn, "turn", f"must contain '{{content}}', got {self.turn!r}")


@dataclasses.dataclass(frozen=True)
class TokenizedExample:
  record: int  # index into the record list
  tokens: np.ndarray  # int32 [length]: prompt then response (ending in EOS)
  prompt_length: int  # tokens before the first supervised one

  @property
  def length(self) -> int:
    return int(self.tokens.shape[0])


def _ids(tokenizer: Any, text: str) -> list[int]:
  return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def plain_prompt(record: SFTRecord, template: TemplateConfig) -> str:
  """The prompt as text without a chat template: every prompt turn, then the generation prefix."""
  turns = "".join(template.turn.format(role=m["role"], content=m["content"]) for m in record.prompt_messages)
  return turns + template.generation_prefix


def _prompt_and_response(record: SFTRecord, tokenizer: Any, template: TemplateConfig) -> tuple[list[int], list[int]]:
  eos = tokenizer.eos_token_id
  if eos is None:
    raise TokenizationError("the tokenizer has no eos_token_id; every response must end in EOS")
  if template.use_chat_template and getattr(tokenizer, "chat_template", None):
    prompt = list(
      tokenizer.apply_chat_template(
        list(record.prompt_messages), add_generation_prompt=True, tokenize=True, return_dict=False
      )
    )
    full = list(tokenizer.apply_chat_template(list(record.messages), tokenize=True, return_dict=False))
    if full[: len(prompt)] == prompt and len(full) > len(prompt):
      response = full[len(prompt) :]
      return prompt, response if response[-1] == eos else response + [eos]
    # Templates that rewrite earlier turns: fall back to prompt + plainly tokenised response.
    return prompt, _ids(tokenizer, record.response) + [eos]
  prompt = _ids(tokenizer, plain_prompt(record, template))
  if template.add_bos and tokenizer.bos_token_id is not None:
    prompt = [tokenizer.bos_token_id] + prompt
  return prompt, _ids(tokenizer, record.response) + [eos]


def tokenize_sft(
  records: Sequence[SFTRecord],
  tokenizer: Any,
  max_length: int,
  template: TemplateConfig,
  overlong: str = "truncate_prompt",
) -> tuple[list[TokenizedExample], dict[str, int]]:
  """Tokenises every record; over-long ones follow `overlong`. Returns examples and counts.

  `truncate_prompt` drops prompt tokens from the left (the response is what is being learned);
  a response that alone exceeds `max_length` cannot be supervised whole and is dropped. `error`
  refuses the data, naming the first over-long records; otherwise a WARNING counts and names them.
  """
  if overlong not in OVERLONG_POLICIES:
    raise TokenizationError(f"data.overlong '{overlong}' is not one of {OVERLONG_POLICIES}")
  examples, truncated, dropped, longer = [], 0, 0, []
  for i, record in enumerate(records):
    prompt, response = _prompt_and_response(record, tokenizer, template)
    if len(prompt) + len(response) > max_length:
      longer.append(f"{record.where} (id '{record.id}')" if record.where else f"id '{record.id}'")
      if overlong != "truncate_prompt" or len(response) >= max_length:
        dropped += 1
        continue
      prompt = prompt[len(prompt) + len(response) - max_length :]
      truncated += 1
    examples.append(TokenizedExample(i, np.asarray(prompt + response, np.int32), len(prompt)))
  report = {"examples": len(examples), "truncated": truncated, "dropped": dropped}
  named = ", ".join(longer[:LISTED_OVERLONG]) + (", ..." if len(longer) > LISTED_OVERLONG else "")
  if longer and overlong == "error":
    raise TokenizationError(
      f"{len(longer)} SFT record(s) longer than data.max_length={max_length} tokens ({named}); "
      "raise data.buckets' largest, or set data.overlong to truncate_prompt or drop"
    )
  if longer:
    log.warning(
      "tokenize: %d over-long example(s) (%s): %d had their prompt truncated, %d were dropped (max_length %d)",
      len(longer),
      named,
      truncated,
      dropped,
      max_length,
    )
  if not examples:
    raise TokenizationError(f"no example fits data.max_length={max_length}")
  return examples, report


def pack_corpus(documents: Sequence[CorpusDocument], tokenizer: Any, seq_length: int) -> np.ndarray:
  """Concatenates documents (each followed by EOS) and cuts the stream into [n, seq_length] rows."""
  stream: list[int] = []
  for doc in documents:
    stream += _ids(tokenizer, doc.text) + [tokenizer.eos_token_id]
  rows = len(stream) // seq_length
  if rows == 0:
    raise TokenizationError(f"corpus of {len(stream)} tokens is shorter than one sequence of {seq_length}")
  return np.asarray(stream[: rows * seq_length], np.int32).reshape(rows, seq_length)
