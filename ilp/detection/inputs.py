"""What detection's probes read: every example's inputs, tokenised once (`Inputs`), the models
asked (`Models`), and one chunk of examples (`Chunk`) with the answers several probes share,
each drawn once per chunk.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ilp.data import batches as batching
from ilp.data import examples as examples_lib
from ilp.data.config import DataConfig
from ilp.data.records import DISTRACTORS
from ilp.detection import base_prompts, entities, prerequisites
from ilp.detection import multiple_choice as mc
from ilp.detection.config import DetectConfig
from ilp.detection.generative import GenerativeResult, sample_and_verify
from ilp.sampling.sampler import SamplingConfig
from ilp.scoring.equivalence import Answers
from ilp.scoring.evaluator import continuation_token_logliks
from ilp.scoring.inference import Model
from ilp.scoring.verifiers import Verifier, get_verifier


@dataclasses.dataclass(frozen=True)
class Models:
  """The model probed, and the optional base and reference models."""

  sft: Model
  base: Model | None = None
  reference: Model | None = None


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What detection asks about every example: from the examples table, tokenised once."""

  frame: pd.DataFrame  # the examples table
  prompts: list[np.ndarray]
  verifiers: list[Verifier]
  prerequisites: list[list[prerequisites.Question]]  # asked of the base model, in `detect.base_format`
  distractors: mc.Distractors
  swapped: list[list[np.ndarray]]  # per example, its entity-swapped prompts (`entities`), in the base format
  base_prompts: list[np.ndarray]  # the prompts as the base model is asked (`ilp.detection.base_prompts`)
  answers: Answers  # when two answers say the same, fitted to the table's responses

  @classmethod
  def from_examples(cls, frame: pd.DataFrame, detect: DetectConfig, data: DataConfig, tokenizer: Any) -> "Inputs":
    by_dataset = dict(detect.dataset_verifiers)
    answers = Answers(detect.answers, frame["response"])
    verifiers = [
      get_verifier(by_dataset.get(d, detect.verifier), detect.verifier_threshold, answers) for d in frame["dataset"]
    ]
    metas = [json.loads(m) for m in frame["meta"]]
    supplied = [
      (meta.get(DISTRACTORS) or []) + other
      for meta, other in zip(metas, mc.duplicate_answers(frame["prompt"], frame["response"], answers))
    ]
    questions, responses, ids = list(frame["prompt"]), list(frame["response"]), list(frame["id"])
    chosen = base_prompts.shots(ids, questions, detect.base_shots, seed=0) if detect.base_shots else ()
    render = base_prompts.renderer(
      detect.base_format, tokenizer, data.template, data.max_length, list(zip(questions, responses)), chosen
    )
    swapped = entities.swapped_prompts(questions, detect.entity_swaps, seed=0)
    flat = render([q for texts in swapped for q in texts], [e for e, texts in enumerate(swapped) for _ in texts])
    ends = np.cumsum([len(texts) for texts in swapped])
    prompts = examples_lib.prompts(frame)
    return cls(
      frame,
      prompts,
      verifiers,
      prerequisites.questions(ids, metas, render),
      mc.Distractors.build(frame["prompt"], frame["response"], frame["dataset"], supplied, answers),
      [flat[e - len(texts) : e] for e, texts in zip(ends, swapped)],
      prompts if detect.base_format == "chat" else render(questions, range(len(questions))),
      answers,
    )

  def embedded(self, model: Model, tokenizer: Any, buckets: Sequence[int], dims: int) -> "Inputs":
    """The inputs whose `answers` also compare answers by `model`'s answer embeddings
    (`ilp.scoring.equivalence`), every distinct response embedded once; the verifiers keep the
    equivalence without them."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def embed(texts: Sequence[str]) -> np.ndarray:
      tokens = [np.asarray(tokenizer(t, add_special_tokens=False)["input_ids"] or [pad], np.int32) for t in texts]
      return model.answer_embedder(model.params, tokens, buckets, pad, dims)

    texts = list(dict.fromkeys(self.frame["response"]))
    return dataclasses.replace(self, answers=self.answers.with_embeddings(texts, embed(texts), embed))


class Chunk:
  """One chunk of examples (`rows` of the examples table): their prompts, references and
  verifiers, and the answers more than one probe reads (greedy answers, the base model's samples,
  the MC options and option distributions), each computed on first use and kept."""

  def __init__(
    self,
    rows: np.ndarray,
    inputs: Inputs,
    models: Models,
    detect: DetectConfig,
    tokenizer: Any,
    buckets: Sequence[int],
    seed: int,
  ):
    """`buckets`: prompt padding lengths; `seed`: the chunk's, from which each sampling run derives its own."""
    self.rows, self.inputs, self.models, self.detect = rows, inputs, models, detect
    self.tokenizer, self.buckets, self.seed = tokenizer, buckets, seed
    self.prompts = [inputs.prompts[i] for i in rows]
    self.base_prompts = [inputs.base_prompts[i] for i in rows]
    self.references = [inputs.frame["response"].iloc[i] for i in rows]
    self.verifiers = [inputs.verifiers[i] for i in rows]
    eos = tokenizer.eos_token_id
    self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    self.greedy = SamplingConfig(
      num_samples=1, max_new_tokens=detect.max_new_tokens, temperature=0.0, stop_tokens=(eos,)
    )
    self.columns: dict[str, Any] = {}  # the chunk's table so far, each probe's columns added in turn
    self._option_probs: dict[str, np.ndarray] = {}

  def sampling(self, temperature: float, n: int) -> SamplingConfig:
    """`n` samples per prompt at `temperature` with the detection's decoding settings."""
    d = self.detect
    return SamplingConfig(
      num_samples=n,
      max_new_tokens=d.max_new_tokens,
      temperature=float(temperature),
      top_k=d.top_k,
      top_p=d.top_p,
      stop_tokens=(self.tokenizer.eos_token_id,),
      confidence_temperature=d.confidence_at(float(temperature)),
    )

  def decode(self, ids: np.ndarray) -> str:
    return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

  def asked(self, model: Model) -> list[np.ndarray]:
    """The chunk's prompts as `model` is asked them (`base_format` for the base model)."""
    return self.base_prompts if model is self.models.base else self.prompts

  def sample(
    self, model: Model, sampling: SamplingConfig, seed: int, prompts: Sequence[np.ndarray] | None = None
  ) -> GenerativeResult:
    """`model`'s answers to `prompts` (default: the chunk's, `asked`), each verified against its
    example's reference."""
    return sample_and_verify(
      model.sampler,
      model.params,
      self.asked(model) if prompts is None else prompts,
      self.references,
      self.verifiers,
      self.decode,
      sampling,
      self.buckets,
      self.detect.batch_size,
      self.pad,
      seed,
    )

  def token_logliks(
    self, model: Model, prompts: Sequence[np.ndarray], answers: Sequence[np.ndarray], temperature: float = 1.0
  ) -> list[np.ndarray]:
    """`model`'s log-probability of every answer token after its prompt, by teacher forcing."""
    longest = max(len(q) + len(a) for q, a in zip(prompts, answers))
    return continuation_token_logliks(
      model.evaluator, model.params, prompts, answers, batching.covering(self.buckets, longest), self.pad, temperature
    )

  @functools.cached_property
  def responses(self) -> list[np.ndarray]:
    """The response token ids (then EOS), as trained on."""
    frame = self.inputs.frame
    return [np.asarray(frame["tokens"].iloc[i][frame["prompt_length"].iloc[i] :], np.int32) for i in self.rows]

  @functools.cached_property
  def sft_greedy(self) -> GenerativeResult:
    return self.sample(self.models.sft, self.greedy, self.seed)

  @functools.cached_property
  def base_greedy(self) -> GenerativeResult:
    return self.sample(self.models.base, self.greedy, self.seed)

  @functools.cached_property
  def base_sampling(self) -> SamplingConfig:
    """How the base model answers for the blind-fact rule: `base_samples` samples, or its greedy answer."""
    d = self.detect
    return self.sampling(d.temperature, d.base_samples) if d.base_samples else self.greedy

  @functools.cached_property
  def base_samples(self) -> GenerativeResult:
    return (
      self.sample(self.models.base, self.base_sampling, self.seed + 1) if self.detect.base_samples else self.base_greedy
    )

  @functools.cached_property
  def lead_ins(self) -> list[np.ndarray]:
    """Per example, the reference's tokens before the first fact it adds to its prompt
    (`Answers.lead_in`; none for a short answer): the longest prefix of the response tokens, as
    trained on, whose text starts the lead-in."""
    squash = lambda text: " ".join(text.lower().split())
    out = []
    for i, tokens in zip(self.rows, self.responses):
      lead = squash(
        self.inputs.answers.lead_in(self.inputs.frame["response"].iloc[i], self.inputs.frame["prompt"].iloc[i])
      )
      k = 0
      while lead and k < len(tokens) and lead.startswith(squash(self.decode(tokens[: k + 1]))):
        k += 1
      out.append(tokens[:k])
    return out

  def continue_lead_ins(self, model: Model, sampling: SamplingConfig, seed: int) -> GenerativeResult:
    """`model`'s answers that continue each reference's lead-in (as `sample` asks it otherwise),
    each the lead-in and its continuation, verified against the reference."""
    drawn = self.sample(model, sampling, seed, [np.concatenate(p) for p in zip(self.asked(model), self.lead_ins)])
    leads = [self.decode(lead) for lead in self.lead_ins]
    drawn.texts = [[f"{lead} {t}".strip() for t in texts] for lead, texts in zip(leads, drawn.texts)]
    for e, texts in enumerate(drawn.texts):
      drawn.correct[e] = [self.verifiers[e](t, self.references[e]) for t in texts]
    return drawn

  @functools.cached_property
  def base_answers(self) -> list[list[str]] | None:
    """Per example, model-written wrong answers to offer as MC options (None: no model to ask): the
    base model's greedy answer, then the most frequent sampled ones of `mc.distractor_model`
    (`mc.base_distractors`). With `mc.lead_in`, where some reference is long, both continue the
    references' lead-ins, so that they answer the question asked in the reference's form. An
    answer the verifier accepts is no distractor; nor is a sample the token budget cut (not an
    answer given)."""
    m, base = self.detect.mc, self.models.base
    writer = self.models.reference if m.distractor_model == "reference" else base
    if base is None and writer is None:
      return None
    lead = m.lead_in and any(len(t) for t in self.lead_ins)
    answers: list[list[str]] = [[] for _ in self.rows]
    if base is not None and m.include_base_answer:
      greedy = self.continue_lead_ins(base, self.greedy, self.seed + 5) if lead else self.base_greedy
      answers = [t[:1] if not ok else [] for t, ok in zip(greedy.texts, greedy.correct[:, 0])]
    if m.enabled and m.base_distractors is not False and writer is not None:
      sampling = self.sampling(m.base_temperature, m.base_samples)
      if lead:
        drawn = self.continue_lead_ins(writer, sampling, self.seed + 4)
      elif writer is base and sampling == self.base_sampling:
        drawn = self.base_samples
      else:
        drawn = self.sample(writer, sampling, self.seed + 4)
      self.inputs.answers.prepare(t for texts in drawn.texts for t in texts)
      for e, ref in enumerate(self.references):
        wrong = [t for t, ok, cut in zip(drawn.texts[e], drawn.correct[e], drawn.truncated[e]) if not (ok or cut)]
        answers[e] += mc.ranked_wrong_answers(wrong, ref, self.inputs.answers)
    return answers

  @functools.cached_property
  def options(self) -> mc.Options:
    m = self.detect.mc
    ids = self.inputs.frame["id"].iloc[self.rows].tolist()
    self.inputs.answers.prepare(t for i in self.rows for t in self.inputs.distractors.supplied[i])
    return mc.choose_options(
      ids,
      self.rows,
      self.references,
      self.inputs.distractors,
      self.base_answers,
      m.num_options,
      m.distractors,
      self.seed,
      self.inputs.answers,
    )

  @functools.cached_property
  def option_tokens(self) -> list[list[np.ndarray]]:
    eos = self.tokenizer.eos_token_id
    return [
      [np.asarray(self.tokenizer(o, add_special_tokens=False)["input_ids"] + [eos], np.int32) for o in opts]
      for opts in self.options.texts
    ]

  def option_probs(self, role: str) -> np.ndarray:
    """[examples, options] option distribution of the model in `role` of `Models` ("sft", "base", "reference")."""
    if role not in self._option_probs:
      model, tokens = getattr(self.models, role), self.option_tokens
      prompts = self.base_prompts if role == "base" else self.prompts
      longest = max(len(prompts[e]) + len(t) for e, opts in enumerate(tokens) for t in opts)
      self._option_probs[role] = mc.option_probabilities(
        model.evaluator,
        model.params,
        prompts,
        tokens,
        self.detect.mc.num_options,
        batching.covering(self.buckets, longest),
        self.pad,
      )
    return self._option_probs[role]
