"""The detection stage on a model that memorised part of its data; MC scoring; chunk-level resume."""

import dataclasses
import glob
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pandas as pd
import pytest
from flax import nnx
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ilp import config as ilp_config
from ilp import faults, parallel, pipeline
from ilp.data import examples
from ilp.detection import columns as col
from ilp.detection import entities, retest
from ilp.detection import multiple_choice as mc
from ilp.detection.config import DetectConfig
from ilp.detection.inputs import Chunk, Inputs, Models
from ilp.detection.probes import probe_model
from ilp.model import build, checkpoint, hf
from ilp.scoring import dynamics_log, estimators
from ilp.scoring.equivalence import Answers
from ilp.scoring.evaluator import ExampleEvaluator
from ilp.scoring.inference import Model
from ilp.scoring.verifiers import normalize
from ilp.typed import ConfigError
from tests import ROOT, sft_data


def _config(paths):
  config = sft_data.sft_config(paths, epochs=25)
  config.stages = ("init_model", "sft", "detect")
  config.sft.checkpoint.every_steps = 10_000
  config.detect.update(
    num_samples=5,
    temperature=0.3,
    max_new_tokens=8,
    batch_size=8,
    chunk_size=10,
    pass_k=(1, 5),
    bon_k=(1, 3),
    top_candidates=3,
    repeats=2,
  )
  return config


@pytest.fixture(scope="module")
def detected(tmp_path_factory):
  base = tmp_path_factory.mktemp("detect")
  paths = sft_data.make_inputs(str(base / "data"), per_dataset=12)
  workdir = str(base / "work")
  pipeline.run(_config(paths), workdir)
  return paths, workdir, pd.read_parquet(os.path.join(workdir, "detect", "detection.parquet"))


def test_detection_table_is_consistent(detected):
  _, workdir, table = detected
  summary = json.load(open(os.path.join(workdir, "detect", "summary.json")))
  assert len(table) == 24 and table["id"].is_unique and summary["protocols"] == ["multiple_choice", "generative"]
  for column in table:  # the schema names every column (KeyError otherwise)
    col.meaning(column)
  for protocol, p in (("multiple_choice", "mc_"), ("generative", "gen_")):
    s = summary[protocol]
    assert 0 < s["unlearned_rate"] < 1, protocol  # some examples memorised, some not
    assert s["unlearned_rate"] == pytest.approx(table[f"{p}unlearned"].mean())
    runs = np.asarray(table[f"{p}unlearned_runs"].tolist())
    # The default repeat rule: unlearned when pass@N < 0.2 in every run; the first run's is pass@N's.
    np.testing.assert_array_equal(table[f"{p}unlearned"], runs.all(1))
    np.testing.assert_array_equal(runs[:, 0], table[f"{p}pass_at_n"] < 0.2)
    np.testing.assert_allclose(table[f"{p}pass_at_5"], (table[f"{p}c"] > 0).astype(float))
    np.testing.assert_allclose(table[f"{p}pass_at_1"], table[f"{p}pass_at_n"])
    np.testing.assert_allclose(table[f"{p}bon_at_1"], table[f"{p}pass_at_n"])
    assert s["kappa_between_runs"] == pytest.approx(estimators.cohen_kappa(runs[:, 0], runs[:, 1]))
    # Severity: unlearned examples ranked 1..U by error consistency; top candidates are the first 3.
    ranked = table[table[f"{p}unlearned"]].sort_values(f"{p}severity_rank")
    assert ranked[f"{p}severity_rank"].tolist() == list(range(1, len(ranked) + 1))
    assert ranked[f"{p}error_consistency"].is_monotonic_decreasing
    assert table[f"{p}top_candidate"].sum() == min(3, len(ranked)) == s["top_candidates"]
  assert summary["kappa_between_protocols"] == pytest.approx(
    estimators.cohen_kappa(table["mc_unlearned"], table["gen_unlearned"])
  )
  np.testing.assert_allclose(table["gen_pass_at_n"], table["gen_c"] / table["gen_n"])
  # Greedy correctness is the verifier (exact match) on the decoded greedy answer.
  assert table["greedy_correct"].any()
  np.testing.assert_array_equal(
    table["greedy_correct"], table["greedy_text"].map(normalize) == table["reference"].map(normalize)
  )
  assert (
    table.loc[table["greedy_correct"], "gen_pass_at_n"].mean()
    > table.loc[~table["greedy_correct"], "gen_pass_at_n"].mean()
  )
  assert all(len(s) == 5 for s in table["gen_samples"])
  # Probes: the SFT model prefers its training answers more than the random base model does.
  assert table["sft_p_true"].mean() > table["base_p_true"].mean()
  np.testing.assert_allclose([sum(p) for p in table["mc_probs_base"]], 1.0, rtol=1e-9)
  np.testing.assert_array_equal(table["p_exist"], table["base_mc_accuracy"] > 0.8)
  np.testing.assert_allclose(
    table["jsd_base_sft"], estimators.js_divergence(np.stack(table["mc_probs_base"]), np.stack(table["mc_probs_sft"]))
  )
  assert (table["mc_options"].map(len) == 4).all() and (
    table["mc_options"].map(lambda o: o[0]) == table["reference"]
  ).all()
  # Wrong options by source; the base model's come first (its greedy answer, when wrong, leads) and none is the answer.
  sources = table[[col.options_from(s) for s in col.SOURCES]].to_numpy()
  np.testing.assert_array_equal(sources.sum(1), 3)
  assert summary["mc_mean_options_from"] == pytest.approx(dict(zip(col.SOURCES, sources.mean(0))))
  assert table["mc_options_from_base"].sum() > len(table)  # more than the greedy answers: samples too
  for row in table.itertuples():
    assert not any(Answers().equivalent(o, row.reference) for o in row.mc_options[1 : 1 + row.mc_options_from_base])
    if row.base_greedy_text.strip() and not row.base_greedy_correct:
      assert row.mc_options[1] == row.base_greedy_text
  # The untrained base model against its own wrong answers: no better than chance (1/4).
  assert table["base_mc_correct"].mean() <= 0.25 and table["base_p_true"].mean() < 0.25
  # The MC protocol's first run is N draws from the SFT option distribution at the sampling temperature.
  correct, _ = mc.predictions(np.stack(table["mc_probs_sft"]), 0.3, 0.3, 5, 0 * 1_000_003 + 0)
  first_chunk = slice(0, 10)
  np.testing.assert_allclose(table["mc_pass_at_n"].to_numpy()[first_chunk], correct.mean(1)[first_chunk])
  # P_exist, the paper's: the base model's accuracy over N predictions from its option distribution > 0.8.
  base_correct, _ = mc.predictions(np.stack(table["mc_probs_base"])[first_chunk], 0.3, 0.3, 5, 0 + 3)
  np.testing.assert_allclose(table["base_mc_accuracy"].to_numpy()[first_chunk], base_correct.mean(1))


def test_option_probabilities_match_direct_computation(detected):
  paths, workdir, table = detected
  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  cfg, graphdef, params = checkpoint.load_params(os.path.join(workdir, "sft", "final"), mesh)
  rng = np.random.default_rng(0)
  prompts = [rng.integers(3, 90, n).astype(np.int32) for n in (3, 6, 2)]
  options = [[rng.integers(3, 90, m).astype(np.int32) for m in sizes] for sizes in ((2, 4, 1), (3, 3), (5, 1, 2))]
  probs = mc.option_probabilities(ExampleEvaluator(graphdef, cfg, mesh, 8), params, prompts, options, 3, (16,), 0)
  for e, (prompt, opts) in enumerate(zip(prompts, options)):
    scores = []
    for opt in opts:
      seq = np.concatenate([prompt, opt])[None]
      log_probs = np.asarray(jax.nn.log_softmax(jax.jit(build.forward)(graphdef, params, seq)[0][0]), np.float64)
      scores.append(np.mean([log_probs[len(prompt) - 1 + t, tok] for t, tok in enumerate(opt)]))
    direct = np.exp(scores - np.max(scores))
    np.testing.assert_allclose(probs[e, : len(opts)], direct / direct.sum(), rtol=1e-4)
    assert (probs[e, len(opts) :] == 0).all()


def test_killed_detection_resumes_from_finished_chunks(detected, tmp_path):
  paths, workdir, table = detected
  copy = str(tmp_path / "work")
  shutil.copytree(workdir, copy)
  detect_dir = os.path.join(copy, "detect")
  os.remove(os.path.join(detect_dir, "detection.parquet"))
  os.remove(os.path.join(detect_dir, "summary.json"))
  os.remove(os.path.join(detect_dir, "parts", "part-00002.parquet"))  # the chunk a kill interrupted
  kept = os.path.getmtime(os.path.join(detect_dir, "parts", "part-00000.parquet"))
  pipeline.run(_config(paths), copy)
  assert os.path.getmtime(os.path.join(detect_dir, "parts", "part-00000.parquet")) == kept
  pd.testing.assert_frame_equal(pd.read_parquet(os.path.join(detect_dir, "detection.parquet")), table)


def test_damaged_parts_and_tables_are_computed_again(detected, tmp_path, caplog):
  """A part with three rows lost (its table deleted, as if killed) is computed again, not
  concatenated: the table keeps every example; a truncated table is written again from its parts."""
  paths, workdir, table = detected
  copy = str(tmp_path / "work")
  shutil.copytree(workdir, copy)
  detect_dir = os.path.join(copy, "detect")
  part = os.path.join(detect_dir, "parts", "part-00001.parquet")
  pd.read_parquet(part).iloc[:-3].to_parquet(part, index=False)
  os.remove(os.path.join(detect_dir, "detection.parquet"))
  with caplog.at_level(logging.WARNING):
    pipeline.run(_config(paths), copy)
  assert f"{part}: " in caplog.text and "the part is computed again" in caplog.text
  pd.testing.assert_frame_equal(pd.read_parquet(os.path.join(detect_dir, "detection.parquet")), table)
  faults.truncate(os.path.join(detect_dir, "detection.parquet"))
  stamp = os.path.getmtime(os.path.join(copy, "sft", "final"))
  pipeline.run(_config(paths), copy)
  pd.testing.assert_frame_equal(pd.read_parquet(os.path.join(detect_dir, "detection.parquet")), table)
  assert os.path.getmtime(os.path.join(copy, "sft", "final")) == stamp
  with open(os.path.join(detect_dir, "parts", "parts.json"), "w") as f:  # the parts' record lost: none trusted
    f.write('{"parts": {"part-00000.parquet": 3}}')
  os.remove(os.path.join(detect_dir, "detection.parquet"))
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    pipeline.run(_config(paths), copy)
  assert caplog.text.count("not recorded as written; the part is computed again") == 3  # every chunk
  pd.testing.assert_frame_equal(pd.read_parquet(os.path.join(detect_dir, "detection.parquet")), table)


def test_choose_options_prefers_the_base_answer_and_skips_duplicates():
  responses = ["x y", "The  X y!", "z", "w", "v"]
  distractors = mc.Distractors(
    mc.distractor_pools(responses, ["d"] * 5), mc.distractor_pools(responses, [0] * 5), ["d"] * 5, [0] * 5, [[]] * 5
  )
  options = mc.choose_options(["a"], [0], ["x y"], distractors, [["q r"]], 4, "random", seed=0).texts[0]
  assert options[0] == "x y" and options[1] == "q r" and len(options) == 4
  assert len({o.lower() for o in options}) == 4 and "The  X y!" not in options
  same = mc.choose_options(["a"], [0], ["x y"], distractors, [["X Y"]], 4, "similar_length", seed=0).texts[0]
  assert "X Y" not in same and len(same) == 4


def test_diagnosis_without_corpus_follows_its_rules(detected, tmp_path):
  """The diagnose stage on a run with no pre-training corpus: the probe-only rules, in order."""
  paths, workdir, table = detected
  copy = str(tmp_path / "work")
  shutil.copytree(workdir, copy)
  config = _config(paths)
  config.stages = config.stages + ("diagnose",)
  pipeline.run(config, copy)
  out = pd.read_parquet(os.path.join(copy, "diagnosis", "attribution.parquet")).set_index("id")
  assert sorted(out.index) == sorted(table["id"]) and "corpus_support" not in out
  for column in out.reset_index():  # the schema names every column (KeyError otherwise)
    col.meaning(column)
  order = list(config.diagnose.rules.order)
  for ident, row in out.iterrows():
    holding = [c for c in row["rules"].split(";") if c]
    expected = "learned" if not row["unlearned"] else (holding[0] if holding else "unattributed")
    assert row["cause"] == expected and holding == sorted(holding, key=order.index), ident
    if "II" in holding:
      assert row["base_high_conf_error"] and row["jsd_base_sft"] > 0.3
  summary = json.load(open(os.path.join(copy, "diagnosis", "summary.json")))
  # The default diagnosis explains the paper's (MC) label; shares over all unlearned and over the top K.
  assert summary["protocol"] == "multiple_choice"
  np.testing.assert_array_equal(out.loc[table["id"], "unlearned"], table["mc_unlearned"])
  assert sum(v["count"] for v in summary["by_cause"].values()) == int(table["mc_unlearned"].sum())
  top = out[out["unlearned"] & out["top_candidate"]]
  assert summary["top_candidates"] == len(top) == int(table["mc_top_candidate"].sum())
  for cause, v in summary["by_cause"].items():
    assert v["top_k_count"] == int((top["cause"] == cause).sum())
    assert v["share_of_top_k"] == pytest.approx((top["cause"] == cause).mean() if len(top) else 0.0)
  # each cause's learning curve in TensorBoard: its examples' mean loss per evaluation step
  events = glob.glob(os.path.join(copy, "diagnosis", "tensorboard", "events.out.tfevents.*"))
  scalars = EventAccumulator(events[0], size_guidance={"scalars": 0}).Reload()
  evals = dynamics_log.rows(dynamics_log.load(os.path.join(copy, "sft", "dynamics")), dynamics_log.EVAL)
  for cause, ids in out.groupby("cause").groups.items():
    direct = evals[evals["id"].isin(ids)].groupby("step")["loss"].mean()
    logged = {e.step: e.value for e in scalars.Scalars(f"diagnose/curves/loss/{cause}")}
    assert sorted(logged) == direct.index.tolist()
    np.testing.assert_allclose([logged[k] for k in direct.index], direct.to_numpy(), rtol=1e-5)


def test_examples_table_is_what_training_saw_and_detect_builds_it_for_a_model_trained_elsewhere(detected, tmp_path):
  """sft writes the examples table once (tokens as trained on); detect on a checkpoint from another
  work directory, with no sft stage of its own, builds the same table and the same detection."""
  paths, workdir, table = detected
  examples = pd.read_parquet(os.path.join(workdir, "examples.parquet"))
  assert examples["id"].tolist() == table["id"].tolist()
  tokenizer = hf.load_tokenizer(paths["tokenizer"])
  for row in examples.itertuples():
    assert list(row.tokens[row.prompt_length :]) == tokenizer(row.response, add_special_tokens=False)["input_ids"] + [
      tokenizer.eos_token_id
    ]
    assert row.length == len(row.tokens)
  config = _config(paths)
  config.stages = ("detect",)
  config.detect.update(model=os.path.join(workdir, "sft", "final"), base=os.path.join(workdir, "model_init"))
  other = tmp_path / "other"
  pipeline.run(config, str(other))
  pd.testing.assert_frame_equal(pd.read_parquet(other / "examples.parquet"), examples)
  pd.testing.assert_frame_equal(pd.read_parquet(other / "detect" / "detection.parquet"), table)


def test_same_kind_distractors_and_supplied_options_come_first():
  """Birthplace questions get cities (answers of the same kind), not job titles; a record's own
  `meta.distractors` lead, then the base model's wrong answer."""
  prompts = [
    "where was p1 born ?",
    "where was p2 born ?",
    "where was p3 born ?",
    "where was p4 born ?",
    "what is the job of p1 ?",
    "what is the job of p2 ?",
    "what is the job of p3 ?",
    "what is the job of p5 ?",
  ]
  responses = ["c1", "c2", "c3", "c4", "j1", "j2", "j3", "j4"]
  supplied = [["c9"]] + [[]] * 7
  distractors = mc.Distractors.build(prompts, responses, ["d"] * 8, supplied, Answers())
  options = mc.choose_options(
    ["a", "b"], [0, 4], ["c1", "j1"], distractors, [["c7"], [""]], 4, "same_kind", seed=0
  ).texts
  assert options[0][:3] == ["c1", "c9", "c7"] and options[0][3] in {"c2", "c3", "c4"}
  assert options[1][0] == "j1" and set(options[1][1:]) == {"j2", "j3", "j4"}
  mixed = mc.choose_options(["b"], [4], ["j1"], distractors, None, 4, "random", seed=0).texts[0]
  assert len(mixed) == 4 and len(set(mixed)) == 4


def test_multiple_choice_protocol_alone_through_diagnosis_and_report(detected, tmp_path):
  """A run that detects with the paper's protocol only (no generations, no greedy answers) is
  diagnosed and reported from the MC columns."""
  paths, workdir, table = detected
  copy = tmp_path / "work"
  shutil.copytree(workdir, copy)
  generative = [c for c in table if c.startswith("gen_") or c.startswith("greedy_")]
  table.drop(columns=generative).to_parquet(copy / "detect" / "detection.parquet", index=False)
  os.remove(copy / "provenance.json")  # the table is now an MC-only run's: its recorded settings go with it
  config = _config(paths)
  config.stages = config.stages + ("diagnose", "report")
  config.detect.protocol = "multiple_choice"
  pipeline.run(config, str(copy), adopt=True)  # accepted as made with this config
  out = pd.read_parquet(copy / "diagnosis" / "attribution.parquet").set_index("id")
  np.testing.assert_array_equal(out.loc[table["id"], "unlearned"], table["mc_unlearned"])
  assert "greedy_text" not in out and "answers_partner_target" not in out
  report = (copy / "report" / "report.md").read_text()
  assert "MC (paper's protocol)" in report and "generative" not in report.split("## Why")[0]
  record = json.load(open(copy / "sft" / "summary.json"))["convergence"]  # SFT's verdict, plotted and tabled
  last = record["phases"][record["last_phase"]]
  assert "## Convergence" in report and (copy / "report" / "convergence.png").exists()
  assert (
    f"| {record['last_phase']} | {'yes' if last['converged'] else '**no**'} | 25 | 25 | "
    f"{last['relative_lr']:.2f} | b | {last['datasets']['b']['previous_loss']:.4g} → "
    f"{last['datasets']['b']['loss']:.4g} |"
  ) in report


def _direct_token_logliks(graphdef, params, prompt, response, temperature=1.0):
  seq = np.concatenate([prompt, response])[None].astype(np.int32)
  logits = np.asarray(jax.jit(build.forward)(graphdef, params, seq)[0][0], np.float64)
  log_probs = np.asarray(jax.nn.log_softmax(logits / temperature, axis=-1))
  return np.asarray([log_probs[len(prompt) - 1 + t, tok] for t, tok in enumerate(response)])


def test_expected_pass_entity_lift_and_embeddings_match_direct_computation(detected):
  paths, workdir, table = detected
  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  config = ilp_config.load(_config(paths))
  frame = examples.read(os.path.join(workdir, "examples.parquet")).set_index("id").loc[table["id"]]
  cfg, graphdef, params = checkpoint.load_params(os.path.join(workdir, "sft", "final"), mesh)
  _, base_graphdef, base_params = checkpoint.load_params(os.path.join(workdir, "model_init"), mesh)
  tokenizer = checkpoint.load_tokenizer(os.path.join(workdir, "sft", "final"))
  swapped = entities.swapped_prompts(list(frame["prompt"]), config.detect.entity_swaps, seed=0)
  special = set(tokenizer.all_special_ids)
  assert table["base_entity_lift"].notna().sum() >= len(table) // 2
  for e in range(0, len(table), 5):
    tokens, cut = np.asarray(frame["tokens"].iloc[e], np.int32), int(frame["prompt_length"].iloc[e])
    prompt, response = tokens[:cut], tokens[cut:]
    # the probability that one sample at the sampling temperature is the reference
    direct = np.exp(_direct_token_logliks(graphdef, params, prompt, response, 0.3).sum())
    assert table["gen_expected_pass"].iloc[e] == pytest.approx(direct, rel=1e-3, abs=1e-9)
    # the embedding: the final-normed hidden state at the prompt's last token
    hidden, _ = nnx.merge(graphdef, params).hidden_states(prompt[None])
    np.testing.assert_allclose(table["prompt_embedding"].iloc[e], np.asarray(hidden)[0, -1], rtol=1e-4, atol=1e-5)
    # the answer embedding: the mean final-normed hidden state over the reference's own tokens
    answer = np.asarray(tokenizer(frame["response"].iloc[e], add_special_tokens=False)["input_ids"], np.int32)
    states, _ = nnx.merge(graphdef, params).hidden_states(answer[None])
    np.testing.assert_allclose(table["response_embedding"].iloc[e], np.asarray(states)[0].mean(0), rtol=1e-4, atol=1e-5)
    # the entity lift under the base model: the best fresh token's mean gain over the swapped prompts
    if swapped[e]:
      own = _direct_token_logliks(base_graphdef, base_params, prompt, response)
      others = [
        _direct_token_logliks(base_graphdef, base_params, q, response)
        for q in entities.render(swapped[e], tokenizer, config.data.template, config.data.max_length)
      ]
      fresh = np.asarray([t not in set(prompt.tolist()) | special for t in response])
      expected = np.mean([own - o for o in others], axis=0)[fresh].max() if fresh.any() else np.nan
      assert table["base_entity_lift"].iloc[e] == pytest.approx(expected, rel=1e-3, abs=1e-4, nan_ok=True)
  sft = np.stack(table["mc_probs_sft"])
  np.testing.assert_allclose(table["mc_expected_pass"], estimators.temper(sft, 0.3)[:, 0], rtol=1e-9)
  belief = np.stack(table["mc_probs_base"])[:, 1:].argmax(1) + 1
  np.testing.assert_allclose(table["sft_p_base_belief"], sft[np.arange(len(sft)), belief], rtol=1e-9)
  np.testing.assert_array_equal(table["gen_unlearned_sampled"], table["gen_unlearned"])  # the default label


def test_swapped_prompts_replace_each_slot_filler_with_a_donors():
  prompts = [f"where was p{k} born ?" for k in range(6)] + ["what is the job of p9 and p8 ?"] * 2 + ["where was born ?"]
  swapped = entities.swapped_prompts(prompts, swaps=2, seed=0)
  for k in range(6):
    assert len(swapped[k]) == 2
    for text in swapped[k]:
      words = text.split()
      assert words[:2] == ["where", "was"] and words[3:] == ["born", "?"] and words[2] != f"p{k}"
      assert words[2] in {f"p{j}" for j in range(6)}
  assert swapped[6] == [] and swapped[8] == []  # no donor with other fillers; no filler at all
  gains = entities.lift(
    [np.array([-1.0, -2.0, -0.1]), np.array([-3.0])],
    [np.array([-4.0, -2.5, -0.1]), np.array([-2.0, -3.5, -0.1])],
    np.array([0, 0]),
    [np.array([True, True, False]), np.array([True])],
  )
  assert gains[0] == pytest.approx(max((3.0 + 1.0) / 2, (0.5 + 1.5) / 2)) and np.isnan(gains[1])


def test_the_expected_label_needs_exact_match_for_the_generative_protocol():
  with pytest.raises(ConfigError, match="'label'"):
    DetectConfig(label="expected", verifier="token_f1")
  with pytest.raises(ConfigError, match="'label'"):
    DetectConfig(label="expected", top_p=0.9)
  assert DetectConfig(label="expected", protocol="multiple_choice", verifier="token_f1").label == "expected"


def test_retest_agreement_against_a_direct_computation():
  rng = np.random.default_rng(0)
  detect = DetectConfig(repeats=3, threshold=0.3)
  tables = [
    pd.DataFrame(
      {
        col.of(p, name): values
        for p in col.PROTOCOLS
        for name, values in ((col.UNLEARNED_SAMPLED, rng.random(50) < 0.4), (col.EXPECTED_PASS, rng.random(50)))
      }
    )
    for _ in range(2)
  ]
  result = retest.agreement(*tables, detect)
  for protocol in col.PROTOCOLS:
    r = result[protocol]
    assert (r["label"], r["runs"], r["repeat_rule"]) == (detect.label, 3, detect.repeat_rule)
    a, b = (t[col.of(protocol, col.UNLEARNED_SAMPLED)].to_numpy() for t in tables)
    ea, eb = (t[col.of(protocol, col.EXPECTED_PASS)].to_numpy() < 0.3 for t in tables)
    for label, (x, y) in (("sampled", (a, b)), ("expected", (ea, eb))):
      observed, chance = (x == y).mean(), x.mean() * y.mean() + (1 - x.mean()) * (1 - y.mean())
      assert r[label]["kappa"] == pytest.approx((observed - chance) / (1 - chance))
      assert (r[label]["unlearned_rate"], r[label]["retest_unlearned_rate"]) == pytest.approx((x.mean(), y.mean()))
  assert "test-retest kappa of the sampled label (3 runs" in retest.summary_text("run", result)


def test_a_retest_with_the_stages_seed_reproduces_its_labels_and_the_script_reports_the_kappa(detected):
  paths, workdir, table = detected
  config = ilp_config.load(json.load(open(os.path.join(workdir, "config.json"))))
  frame = examples.read(os.path.join(workdir, "examples.parquet"))
  model_dir = os.path.join(workdir, "sft", "final")
  same = probe_model(frame, model_dir, config.detect, config.data, config.mesh, config.seed).set_index("id")
  same = same.loc[table["id"]]
  for column in ("gen_pass_at_n", "gen_unlearned", "gen_expected_pass", "greedy_text"):
    np.testing.assert_array_equal(same[column].to_numpy(), table[column].to_numpy(), err_msg=column)
  other = probe_model(frame, model_dir, config.detect, config.data, config.mesh, config.seed + 1).set_index("id")
  result = subprocess.run(
    [sys.executable, os.path.join(ROOT, "scripts", "retest_detection.py"), f"--workdirs={workdir}"],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  retest = json.load(open(os.path.join(workdir, "retest.json")))
  expected = estimators.cohen_kappa(
    table["gen_unlearned"].to_numpy(), other.loc[table["id"], "gen_unlearned"].to_numpy()
  )
  assert retest["generative"]["sampled"]["kappa"] == pytest.approx(expected)
  expected_pass = lambda t: t.loc[table["id"], "gen_expected_pass"].to_numpy() < 0.2
  assert retest["generative"]["expected"]["kappa"] == pytest.approx(
    estimators.cohen_kappa(expected_pass(table.set_index("id")), expected_pass(other))
  )
  assert retest["multiple_choice"]["runs"] == 2 and "test-retest kappa" in result.stdout


def test_model_written_distractors_continue_a_long_references_lead_in(detected, tmp_path):
  """Long references ("w5 w6 w7 <fact> w8"): the base model's distractors continue the words
  before the fact, so each answers the question in the reference's form."""
  paths, workdir, _ = detected
  records = [
    {"id": f"l{i}", "prompt": f"w{60 + i} w9", "response": f"w5 w6 w7 w{30 + i} w8", "dataset": "a", "phase": 1}
    for i in range(12)
  ]
  with open(tmp_path / "long.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  config = ilp_config.load(_config(paths))
  data = dataclasses.replace(config.data, sft=({"path": str(tmp_path / "long.jsonl")},))
  detect = dataclasses.replace(config.detect, mc=dataclasses.replace(config.detect.mc, base_samples=4))
  tokenizer = checkpoint.load_tokenizer(os.path.join(workdir, "sft", "final"), paths["tokenizer"])
  frame = examples.build(data, tokenizer)[0]
  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  load = lambda name: Model(os.path.join(workdir, name), mesh, config.mesh.rules, detect.batch_size)
  inputs = Inputs.from_examples(frame, detect, data, tokenizer)
  chunk = Chunk(
    np.arange(len(frame)), inputs, Models(load("sft/final"), load("model_init")), detect, tokenizer, (16, 24), 0
  )
  assert [chunk.decode(t) for t in chunk.lead_ins] == ["w5 w6 w7"] * len(frame)
  drawn = chunk.continue_lead_ins(chunk.models.base, chunk.sampling(1.0, 4), seed=3)
  assert all(t.startswith("w5 w6 w7 ") for texts in drawn.texts for t in texts)
  for e, texts in enumerate(drawn.texts):  # each verified as a whole, lead-in included
    assert drawn.correct[e].tolist() == [normalize(t) == normalize(chunk.references[e]) for t in texts]
  written = chunk.base_answers
  assert sum(map(len, written)) >= len(frame) and all(t.startswith("w5 w6 w7 ") for w in written for t in w)
  # without the lead-in, the base model answers from scratch
  without = dataclasses.replace(detect, mc=dataclasses.replace(detect.mc, lead_in=False))
  plain = Chunk(chunk.rows, inputs, chunk.models, without, tokenizer, (16, 24), 0)
  assert not all(t.startswith("w5 w6 w7 ") for w in plain.base_answers for t in w)
