"""The column schema (`ilp.detection.columns`): every column detection may write is named there, a
probe cannot write one it does not declare, and diagnosis reads the tables through the schema alone."""

import ast
import glob
import os
import types

import pytest

from ilp.detection import columns as col
from ilp.detection import probes
from ilp.detection.config import DetectConfig
from tests import ROOT


def test_meaning_answers_for_named_and_derived_columns_and_refuses_others():
  assert col.meaning(col.P_EXIST).startswith("knowledge exists")
  assert col.meaning(col.of(col.GENERATIVE, col.pass_at(3))).startswith("generative: unbiased pass@k")
  assert col.meaning(col.BASE_PASS_AT_N).startswith("the base model's samples: pass@N")
  assert col.meaning(col.options_from("pool")) and col.meaning(col.score("III"))
  assert col.meaning(col.UNLEARNED).startswith("diagnose.protocol's")  # the attribution table's generic label
  # prefixes take only their own suffixes: no samples for MC, no label for the base model
  for name in ("mc_samples", "base_unlearned", "gen_foo", "score_X", "pass_at_3", "prompt_embeddings"):
    with pytest.raises(KeyError, match=name):
      col.meaning(name)


def test_every_probe_declares_named_columns_and_only_the_label_rewrites_one():
  detect = DetectConfig(pass_k=(1, 2, 5), bon_k=(1, 3), label="expected")
  declared = [name for probe in probes.PROBES for name in probe.columns(detect)]
  for name in declared:
    col.meaning(name)
  twice = {name for name in declared if declared.count(name) > 1}
  assert twice == {col.of(p, col.UNLEARNED) for p in col.PROTOCOLS}  # the label probe's expected-pass label


def test_a_probe_writing_a_column_it_does_not_declare_fails(monkeypatch):
  chunk = types.SimpleNamespace(detect=DetectConfig(), columns={})
  rogue = probes.Probe(lambda c: {col.ID: ["a"], "extra": [1]}, lambda d: (col.ID,))
  monkeypatch.setattr(probes, "PROBES", (rogue,))
  with pytest.raises(AssertionError, match="extra"):
    probes.table(chunk)


def _imports(path: str) -> set[str]:
  tree = ast.parse(open(path).read())
  found = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
  found |= {
    f"{node.module}.{a.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for a in node.names
  }
  return found | {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}


def test_diagnosis_imports_neither_training_nor_detection_beyond_the_schema():
  for path in glob.glob(os.path.join(ROOT, "ilp", "diagnosis", "*.py")):
    for name in _imports(path):
      assert not name.startswith("ilp.train"), f"{path} imports {name}"
      assert not name.startswith("ilp.detection") or name in ("ilp.detection", "ilp.detection.columns"), (
        f"{path} imports {name}"
      )
