"""Stage `diagnose`: why was each unlearned example not learned? (paper §3–4)

Computes the per-example signals (`ilp.diagnosis.signals`) from the detection table, the
dynamics log and the SFT records, attributes every unlearned example to a cause or to
"unattributed" (`ilp.diagnosis.attribution`), and writes `workdir/diagnosis/`:
`attribution.parquet` (one row per example: signals, cause, evidence scores, the rules that hold
and the conditions that fired), `summary.json`, `diagnosis.md` with its figures, and
`tensorboard/` (text and image summaries). The report stage embeds the same section.
"""
from __future__ import annotations

import json
import logging
import os

import ml_collections
import numpy as np
import pandas as pd

from ilp import fileio
from ilp.data import loaders
from ilp.diagnosis import attribution, signals
from ilp.report import plots
from ilp.stages import pretrain
from ilp.train import dynamics
from ilp.train.metrics import MetricWriter

log = logging.getLogger(__name__)
NAME = "diagnose"
DIR = "diagnosis"
TABLE = "attribution.parquet"
GROUPS = attribution.CAUSES + (attribution.UNATTRIBUTED,)


def outputs(workdir: str) -> list[str]:
  return [os.path.join(workdir, DIR)]


def settings(config: ml_collections.ConfigDict) -> tuple[signals.SignalConfig, attribution.RuleConfig]:
  """The signal and rule settings; an unknown field is an error naming it."""
  made = []
  for field, kind in (("signals", signals.SignalConfig), ("rules", attribution.RuleConfig)):
    section = config.diagnose[field].to_dict()
    unknown = sorted(set(section) - set(kind.__dataclass_fields__))
    if unknown:
      raise ValueError(f"config field 'diagnose.{field}': unknown field(s) {', '.join(unknown)}")
    made.append(kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}))
  return made[0], made[1]


def validate(config: ml_collections.ConfigDict) -> None:
  settings(config)


def prompt_text(messages) -> str:
  return "\n".join(m["content"] for m in messages)


def diagnose(detection: pd.DataFrame, prompts: pd.Series, log_frame: pd.DataFrame,
             config: ml_collections.ConfigDict, corpus_documents: list[str] | None = None) -> pd.DataFrame:
  """Signals joined with the attribution, one row per example (column `id`)."""
  signal_cfg, rule_cfg = settings(config)
  table = signals.compute(detection, prompts, log_frame, signal_cfg, corpus_documents)
  return table.join(attribution.attribute(table, rule_cfg)).reset_index()


def _counts(frame: pd.DataFrame) -> dict:
  unlearned = frame[frame["unlearned"].astype(bool)]
  counts = unlearned["cause"].value_counts()
  return {c: {"count": int(counts.get(c, 0)), "share_of_unlearned": float(counts.get(c, 0) / max(len(unlearned), 1))}
          for c in GROUPS}


def summarize(table: pd.DataFrame) -> dict:
  unlearned = int(table["unlearned"].sum())
  return {"examples": int(len(table)), "unlearned": unlearned, "by_cause": _counts(table),
          "unattributed_share": float((table["cause"] == attribution.UNATTRIBUTED).sum() / max(unlearned, 1)),
          "by_dataset": {str(k): _counts(g) for k, g in table.groupby("dataset")},
          "by_stage": {str(k): _counts(g) for k, g in table.groupby("stage")}}


def _cause_table(counts_by: dict[str, dict], key: str) -> list[str]:
  lines = [f"| {key} | " + " | ".join(f"{c}" for c in GROUPS) + " |", "|---" * (len(GROUPS) + 1) + "|"]
  for name, counts in counts_by.items():
    lines.append(f"| {name} | " + " | ".join(f"{v['count']} ({100 * v['share_of_unlearned']:.0f}%)"
                                             for v in counts.values()) + " |")
  return lines


FIGURES = {"data_map": "data_map.png", "curves": "curves_by_cause.png", "pass_rates": "pass_rates_by_cause.png"}


def draw(table: pd.DataFrame, log_frame: pd.DataFrame, directory: str) -> None:
  """The data map coloured by cause, learning curves per cause group, pass rates per cause."""
  plots.data_map(table, "cause", os.path.join(directory, FIGURES["data_map"]), "Data map, coloured by cause")
  evals = log_frame[log_frame["kind"] == "eval"].merge(table[["id", "cause"]], on="id")
  plots.learning_curves(evals, "cause", os.path.join(directory, FIGURES["curves"]), "Learning curves per cause group")
  unlearned = table[table["unlearned"].astype(bool)]
  plots.histogram({c: g["pass_at_n"].to_numpy() for c, g in unlearned.groupby("cause")} or {"": np.zeros(0)},
                  os.path.join(directory, FIGURES["pass_rates"]), "pass@N of unlearned examples, by cause",
                  "fraction of samples correct", bins=10)


def markdown(table: pd.DataFrame, summary: dict, link_prefix: str, typical: int) -> str:
  """The diagnosis section: per-cause tables, the most typical examples of each cause, figures."""
  overall = summary["by_cause"]
  lines = ["## Why examples were not learned (diagnosis)", "",
           f"{summary['unlearned']} unlearned examples; {100 * summary['unattributed_share']:.1f}% unattributed.", "",
           "| cause | unlearned examples | share |", "|---|---|---|"]
  lines += [f"| {c} {attribution.CAUSE_NAMES.get(c, '')} | {v['count']} | {100 * v['share_of_unlearned']:.1f}% |"
            for c, v in overall.items()]
  lines += ["", "### By data set", ""] + _cause_table(summary["by_dataset"], "dataset")
  lines += ["", "### By stage", ""] + _cause_table(summary["by_stage"], "stage")
  lines += ["", "### Most typical examples of each cause", ""]
  for cause in attribution.CAUSES:
    rows = table[table["cause"] == cause].sort_values(f"score_{cause}", ascending=False).head(typical)
    if rows.empty:
      continue
    lines += [f"**{cause}: {attribution.CAUSE_NAMES[cause]}**", "", "| id | prompt | target | model says | evidence |",
              "|---|---|---|---|---|"]
    for _, r in rows.iterrows():
      fired = ", ".join(f.split(":", 1)[1] for f in r["fired"].split(";") if f.startswith(cause + ":"))
      lines.append(f"| {r['id']} | {_cell(r['prompt'])} | {_cell(r['reference'])} | {_cell(r.get('greedy_text', ''))} "
                   f"| score {r[f'score_{cause}']:.2f}: {fired} |")
    lines.append("")
  lines += ["![data map](" + link_prefix + FIGURES["data_map"] + ")", "",
            "![curves by cause](" + link_prefix + FIGURES["curves"] + ")", "",
            "![pass rates by cause](" + link_prefix + FIGURES["pass_rates"] + ")", ""]
  return "\n".join(lines)


def _cell(text) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")[:80]


def load_inputs(config: ml_collections.ConfigDict, workdir: str
                ) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, list[str] | None]:
  """The detection table, id -> prompt text of the SFT records, the dynamics log, and the
  pre-training corpus documents (when `diagnose.corpus_evidence` and `data.corpora` has any)."""
  detection = pd.read_parquet(os.path.join(workdir, "detect", "detection.parquet"))
  records = loaders.load_sft(config.data.sft)
  prompts = pd.Series({r.id: prompt_text(r.prompt_messages) for r in records}, dtype=object)
  documents = None
  if config.diagnose.corpus_evidence and config.data.corpora:
    sources = [source for source, _ in pretrain.corpus_sources(config, required=False)]
    documents = [d.text for d in loaders.load_corpus(sources)]
  return detection, prompts, dynamics.load_dynamics(os.path.join(workdir, "sft", "dynamics")), documents


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  detection, prompts, log_frame, documents = load_inputs(config, workdir)
  table = diagnose(detection, prompts, log_frame, config, documents)
  table = table.merge(detection[["id"] + [c for c in ("reference", "greedy_text") if c not in table]], on="id")
  table["prompt"] = prompts.reindex(table["id"]).to_numpy()
  summary = summarize(table)
  with fileio.atomic_directory(os.path.join(workdir, DIR)) as out:
    table.to_parquet(os.path.join(out, TABLE), index=False)
    with open(os.path.join(out, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
    draw(table, log_frame, out)
    section = markdown(table, summary, "", config.diagnose.typical_examples)
    with open(os.path.join(out, "diagnosis.md"), "w") as f:
      f.write(section)
    writer = MetricWriter(os.path.join(out, "tensorboard"))
    writer.scalars(0, {f"diagnose/share_of_unlearned/{c}": v["share_of_unlearned"]
                       for c, v in summary["by_cause"].items()})
    writer.text(0, "diagnose/report", section)
    for name, file in FIGURES.items():
      writer.image(0, f"diagnose/{name}", os.path.join(out, file))
    writer.close()
  log.info("diagnose: %d unlearned: %s", summary["unlearned"],
           ", ".join(f"{c} {v['count']}" for c, v in summary["by_cause"].items()))
