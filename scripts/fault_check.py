"""Fault injection: kills, damaged checkpoints, damaged stage outputs, a damaged or lost provenance,
a full disk, a concurrent launch, changed settings, bad configs, bad and odd input records, a kill
during a forced re-run of the arms, and environment faults, each against an uninterrupted reference
run of a small world.

  python scripts/fault_check.py --out=/tmp/faults [--kills=6] [--classes=kill,checkpoint,...]

A fault is *survived* when the run either finishes with outputs identical to the reference's
(parameters bit for bit, every table equal) or refuses with a clear message before doing any work;
a bad config or input is *rejected* when the launch fails naming the field or file and leaves no
work directory behind. An input, config, provenance or environment fault must also end in at most
a 3-frame traceback (launch.py's one-line errors have none). Every launch runs with an audit hook
that records any attempt to open a network connection other than to this machine; the count must
be 0. Prints survived/tried per class and writes `<out>/faults.json`. Disk-full needs root (a small
tmpfs is mounted).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

from absl import app, flags, logging

from ilp import faults
from ilp.layout import Layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout whose launch.py is run

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Directory for the runs and faults.json.")
flags.DEFINE_string("config", "configs/world_small.py", "The reference config (a small world).")
flags.DEFINE_integer("kills", 6, "SIGKILLs at random points of one run, resumed after each.")
flags.DEFINE_integer("seed", 0, "Seed of the kill times.")
flags.DEFINE_list(
  "classes",
  [
    "kill",
    "checkpoint",
    "damaged_output",
    "provenance",
    "disk_full",
    "concurrent",
    "changed_config",
    "bad_config",
    "bad_input",
    "strict_record",
    "arms_kill",
    "environment",
  ],
  "Fault classes to try.",
)
flags.mark_flags_as_required(["out"])

# Installed into every launch through PYTHONPATH: counts connection attempts that leave the machine.
NETWORK_GUARD = """
import os, sys
def _guard(event, args):
  if event in ("socket.connect", "socket.getaddrinfo"):
    target = args[1] if event == "socket.connect" else (args[0], args[1])
    host = target[0] if isinstance(target, tuple) else target
    if isinstance(host, bytes):
      host = host.decode()
    if host not in ("localhost", "127.0.0.1", "::1", "0.0.0.0", None) and not str(host).startswith("/"):
      with open(os.environ["ILP_NETWORK_LOG"], "a") as f:
        f.write(f"{event} {target!r}\\n")
sys.addaudithook(_guard)
"""


MAX_FRAMES = 3  # the longest traceback an input, config or environment fault may end in


def frames(output: str) -> int:
  """The most stack frames of any traceback in `output` (0: none)."""
  most = 0
  for block in output.split("Traceback (most recent call last):")[1:]:
    lines = block.splitlines()[1:]
    count = 0
    for line in lines:
      if not line.startswith(" "):
        break
      count += line.startswith('  File "')
    most = max(most, count)
  return most


def last_line(output: str) -> str:
  return output.strip().splitlines()[-1] if output.strip() else ""


class Checker:
  """Launches runs, compares outputs with the reference and tallies each class."""

  def __init__(self, out: str, config: str):
    self.out, self.config = out, config
    self.guard = os.path.join(out, "guard")
    os.makedirs(self.guard, exist_ok=True)
    with open(os.path.join(self.guard, "sitecustomize.py"), "w") as f:
      f.write(NETWORK_GUARD)
    self.network_log = os.path.join(out, "network.log")
    open(self.network_log, "w").close()
    self.results: dict[str, list[dict]] = {}

  def env(self) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{self.guard}:{ROOT}", "ILP_NETWORK_LOG": self.network_log}

  def launch(self, workdir: str, *extra: str, config: str | None = None) -> subprocess.Popen:
    command = [
      sys.executable,
      os.path.join(ROOT, "launch.py"),
      f"--config={config or self.config}",
      f"--workdir={workdir}",
      *extra,
    ]
    return subprocess.Popen(
      command,
      cwd=ROOT,
      env=self.env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      start_new_session=True,
    )

  def run(self, workdir: str, *extra: str, config: str | None = None, timeout: float = 1800) -> tuple[int, str]:
    process = self.launch(workdir, *extra, config=config)
    output = process.communicate(timeout=timeout)[0]
    return process.returncode, output

  def record(self, name: str, case: str, ok: bool, detail: str) -> None:
    self.results.setdefault(name, []).append({"case": case, "ok": bool(ok), "detail": detail})
    print(f"  [{'ok' if ok else 'FAILED'}] {name}: {case}: {detail}", flush=True)

  def config_file(self, name: str, body: str) -> str:
    """A config module deriving from the reference config, for cases flags cannot express."""
    path = os.path.join(self.out, "configs", f"{name}.py")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    module = os.path.splitext(os.path.relpath(os.path.join(ROOT, self.config), ROOT))[0].replace("/", ".")
    with open(path, "w") as f:
      f.write(
        f"import {module} as reference\n\ndef get_config():\n  c = reference.get_config()\n"
        + textwrap.indent(textwrap.dedent(body), "  ")
        + "\n  return c\n"
      )
    return path


def outputs_differ(reference: str, workdir: str) -> str:
  """'' when every model is bit-identical and every table equal, else what differs first."""
  import jax
  import numpy as np
  import pandas as pd

  from ilp import parallel
  from ilp.model import checkpoint
  from ilp.scoring import dynamics_log

  a, b = Layout(reference), Layout(workdir)
  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  for stage in ("pretrain", "sft"):
    if not os.path.exists(a.final(stage)):
      continue
    if not os.path.exists(b.final(stage)):
      return f"{b.final(stage)} missing"
    pa, pb = checkpoint.load_params(a.final(stage), mesh)[2], checkpoint.load_params(b.final(stage), mesh)[2]
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
      if not np.array_equal(np.asarray(x), np.asarray(y)):
        return f"{stage}/final parameters differ (max |diff| {np.abs(np.asarray(x) - np.asarray(y)).max():.3g})"
  tables = {
    "examples": lambda layout: pd.read_parquet(layout.examples),
    "detection": lambda layout: pd.read_parquet(layout.detection),
    "attribution": lambda layout: pd.read_parquet(layout.attribution),
    "dynamics": lambda layout: dynamics_log.load(layout.dynamics("sft")),
  }
  for name, read in tables.items():
    try:
      pd.testing.assert_frame_equal(read(a), read(b))
    except (AssertionError, FileNotFoundError, OSError) as e:
      return f"{name} differs: {str(e).splitlines()[0]}"
  if not os.path.exists(b.report):
    return "report missing"
  return ""


def tree_state(root: str) -> dict[str, tuple[int, int]]:
  return {
    os.path.join(d, n): (os.stat(os.path.join(d, n)).st_size, os.stat(os.path.join(d, n)).st_mtime_ns)
    for d, _, names in os.walk(root)
    for n in names
  }


def check_kills(c: Checker, reference: str, duration: float, kills: int, rng: random.Random) -> None:
  """Kills one run `kills` times at random points, resumes after each (the last resume after moving
  the work directory), and compares with the reference."""
  workdir = os.path.join(c.out, "killed")
  landed = []
  while len(landed) < kills:
    process = c.launch(workdir)
    delay = rng.uniform(3, duration * 0.7)
    try:
      output = process.communicate(timeout=delay)[0]
      if process.returncode != 0:
        c.record("kill", f"launch after {len(landed)} kills", False, output.strip().splitlines()[-1])
        return
      shutil.rmtree(workdir)  # finished before the kill: start the chain again with other delays
      landed.clear()
      continue
    except subprocess.TimeoutExpired:
      os.killpg(process.pid, signal.SIGKILL)
      output = process.communicate()[0]
    stages = [line.split("stage ")[1].split(":")[0] for line in output.splitlines() if ": running" in line]
    landed.append(f"{delay:.0f}s ({stages[-1] if stages else 'start-up'})")
  moved = workdir + "-moved"
  os.replace(workdir, moved)
  code, output = c.run(moved)
  differ = outputs_differ(reference, moved) if code == 0 else output.strip().splitlines()[-1]
  for i, where in enumerate(landed):
    c.record("kill", f"SIGKILL {i + 1} at {where}", not differ, differ or "resumed, outputs identical")
  c.record("kill", "resume in a moved work directory", not differ, differ or "resumed, outputs identical")


def check_checkpoints(c: Checker, reference: str) -> None:
  layout = Layout(reference)
  steps = sorted(int(s) for s in os.listdir(layout.checkpoints("sft")) if s.isdigit())
  for kind in ("flipped", "truncated", "metadata_deleted"):
    workdir = os.path.join(c.out, f"ckpt-{kind}")
    shutil.copytree(reference, workdir)
    copy = Layout(workdir)
    shutil.rmtree(copy.final("sft"))  # as if killed after the last checkpoint, before the export
    os.remove(copy.summary("sft"))
    step_dir = os.path.join(copy.checkpoints("sft"), str(steps[-1]))
    if kind == "flipped":
      faults.flip_bytes(faults.largest_file(os.path.join(step_dir, "state")))
    elif kind == "truncated":
      faults.truncate(faults.largest_file(os.path.join(step_dir, "state")))
    else:
      os.remove(os.path.join(step_dir, "state", "_METADATA"))
    code, output = c.run(workdir)
    fell_back = f"resuming from step {steps[-2]}" in output
    differ = outputs_differ(reference, workdir) if code == 0 else output.strip().splitlines()[-1]
    c.record(
      "checkpoint",
      f"latest SFT checkpoint {kind}",
      code == 0 and fell_back and not differ,
      differ or ("previous good checkpoint used, outputs identical" if fell_back else "no fallback logged"),
    )
  workdir = os.path.join(c.out, "ckpt-final")
  shutil.copytree(reference, workdir)
  faults.flip_bytes(faults.largest_file(os.path.join(Layout(workdir).final("sft"), "params")))
  code, output = c.run(workdir)
  noticed = "content differs from its checksum" in output
  differ = outputs_differ(reference, workdir) if code == 0 else output.strip().splitlines()[-1]
  c.record(
    "checkpoint",
    "final SFT model flipped",
    code == 0 and noticed and not differ,
    differ or ("rebuilt from the last checkpoint, outputs identical" if noticed else "not noticed"),
  )


def check_disk_full(c: Checker, reference: str) -> None:
  if os.geteuid() != 0:
    c.record("disk_full", "tmpfs work directory", False, "skipped: mounting a tmpfs needs root")
    return
  size = sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(reference) for n in names)
  mount = os.path.join(c.out, "tmpfs")
  os.makedirs(mount, exist_ok=True)
  for share in (0.3, 0.7):
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size * share)}", "tmpfs", mount], check=True)
    try:
      workdir = os.path.join(mount, "work")
      code, output = c.run(workdir)
      failed_cleanly = code != 0 and "No space left" in output
      subprocess.run(["mount", "-o", f"remount,size={int(size * 3)}", mount], check=True)
      code, output = c.run(workdir)
      differ = outputs_differ(reference, workdir) if code == 0 else output.strip().splitlines()[-1]
      c.record(
        "disk_full",
        f"disk full at {share:.0%} of the outputs, space freed, re-run",
        failed_cleanly and not differ,
        differ or ("stopped on ENOSPC, resumed, outputs identical" if failed_cleanly else "the first run did not fail"),
      )
    finally:
      subprocess.run(["umount", mount], check=False)


def check_concurrent(c: Checker, reference: str) -> None:
  """Two launches 1 s apart: whichever takes the lock first runs, the other is refused at once."""
  workdir = os.path.join(c.out, "concurrent")
  first = c.launch(workdir)
  time.sleep(1)
  second = c.launch(workdir)
  start = time.time()
  while first.poll() is None and second.poll() is None:
    time.sleep(0.2)
  refused, winner = (second, first) if second.poll() is not None else (first, second)
  seconds = time.time() - start
  output = refused.communicate()[0]
  ok = refused.returncode != 0 and "in use by pid" in output
  c.record(
    "concurrent",
    "two launches 1 s apart",
    ok,
    f"one refused {seconds:.1f}s after the second start: {output.strip().splitlines()[-1]}",
  )
  winner_out = winner.communicate()[0]
  differ = outputs_differ(reference, workdir) if winner.returncode == 0 else winner_out.strip().splitlines()[-1]
  c.record("concurrent", "the launch holding the lock unaffected", not differ, differ or "outputs identical")


def check_changed_config(c: Checker, reference: str) -> None:
  workdir = os.path.join(c.out, "changed")
  shutil.copytree(reference, workdir)
  before = tree_state(workdir)
  for flag in ("--config.sft.optimizer.learning_rate=0.01", "--config.detect.temperature=0.3"):
    code, output = c.run(workdir, flag)
    untouched = tree_state(workdir) == before
    ok = code != 0 and "made with other settings" in output and untouched
    c.record(
      "changed_config",
      f"finished run re-launched with {flag}",
      ok,
      output.strip().splitlines()[-1] if code else "accepted",
    )
  layout = Layout(workdir)
  shutil.rmtree(layout.training("sft"))
  code, output = c.run(workdir)
  redone = all(f"stage {s}: running" in output for s in ("sft", "detect", "diagnose", "report"))
  differ = outputs_differ(reference, workdir) if code == 0 else output.strip().splitlines()[-1]
  c.record(
    "changed_config",
    "sft/ deleted, re-run",
    redone and not differ,
    differ or ("sft and every later stage redone, outputs identical" if redone else "later stages skipped"),
  )


BAD_CONFIGS = (  # (case, flags, config body, the field the message must name)
  ("negative epochs", (), "c.sft.phases = ({'name': 'p1', 'phase': 1, 'epochs': -1},)", "epochs"),
  ("detect.threshold=1.5", ("--config.detect.threshold=1.5",), "", "threshold"),
  ("detect.temperature=-1", ("--config.detect.temperature=-1",), "", "temperature"),
  ("sft.batch_size=0", ("--config.sft.batch_size=0",), "", "batch_size"),
  ("batch not divisible by grad_accum_steps", ("--config.sft.grad_accum_steps=3",), "", "batch_size"),
  ("detect.num_samples=0", ("--config.detect.num_samples=0",), "", "num_samples"),
  ("data.overlong=chop", ("--config.data.overlong=chop",), "", "overlong"),
  ("pretrain.steps=-5", ("--config.pretrain.steps=-5",), "", "steps"),
  ("learning rate -1", ("--config.sft.optimizer.learning_rate=-1",), "", "learning_rate"),
  ("unknown key", ("--config.sft.nonexistent=1",), "", "nonexistent"),
  ("unknown protocol", ("--config.detect.protocol=oracle",), "", "protocol"),
  ("mesh larger than the devices", (), "c.mesh.shape = (3, 1, 1)", "mesh.shape"),
  ("unknown stage", (), "c.stages = c.stages + ('train_more',)", "stages"),
  ("top_p=0", ("--config.detect.top_p=0",), "", "top_p"),
  (
    "arm named '..'",
    (),
    "c.stages = c.stages + ('arms',)\n"
    "c.interventions.arms = ({'name': '..', 'intervention': 'conflict', 'settings': {'delete': 'minority'}},)",
    "name",
  ),
  ("max_position_embeddings < largest bucket", ("--config.model.max_position_embeddings=32",), "", "max_position"),
  (
    "online arm with share 0",
    (),
    "c.stages = c.stages + ('arms',)\n"
    "c.interventions.arms = ({'name': 'online', 'intervention': 'online', "
    "'settings': {'model': '/m.json', 'share': 0.0}},)",
    "share",
  ),
  ("online replay of III", (), "c.sft.online.replay_causes = ('V', 'III')", "replay_causes"),
  ("missing early-warning model", ("--config.sft.online.model=/nonexistent/warning.json",), "", "sft.online.model"),
)


def check_bad_configs(c: Checker) -> None:
  for i, (case, flags_, body, field) in enumerate(BAD_CONFIGS):
    config = c.config_file(f"bad{i}", body) if body else None
    workdir = os.path.join(c.out, f"bad-config-{i}")
    start = time.time()
    code, output = c.run(workdir, *flags_, config=config, timeout=300)
    last = last_line(output)
    ok = code != 0 and field in last and not os.path.exists(workdir) and frames(output) <= MAX_FRAMES
    c.record("bad_config", case, ok, f"{last[:160]} ({time.time() - start:.0f}s, traceback frames {frames(output)})")


def check_bad_inputs(c: Checker, reference: str, kinds: tuple = faults.JSONL_DAMAGE, name: str = "bad_input") -> None:
  world = Layout(reference).world
  data = os.path.join(c.out, f"{name}-data")
  os.makedirs(data, exist_ok=True)
  cases = []
  for kind in kinds:
    target = os.path.join(data, kind.replace(" ", "_") + ".jsonl")
    faults.damage_jsonl(os.path.join(world, "sft_phase2.jsonl"), target, kind)
    cases.append(
      (
        kind,
        f"c.data.sft = ({{'path': {os.path.join(world, 'sft_phase1.jsonl')!r}}}, {{'path': {target!r}}})",
        os.path.basename(target),
      )
    )
  cases += (
    []
    if name != "bad_input"
    else [
      ("missing SFT file", "c.data.sft = ({'path': '/nonexistent/sft.jsonl'},)", "/nonexistent/sft.jsonl"),
      ("Hub id as an hf source", "c.data.sft = ({'path': 'tatsu-lab/alpaca', 'format': 'hf'},)", "tatsu-lab/alpaca"),
      (
        "Hub id as an hf dataset name",
        "c.data.sft = ({'name': 'tatsu-lab/alpaca', 'format': 'hf'},)",
        "tatsu-lab/alpaca",
      ),
      ("URL as a source", "c.data.sft = ({'path': 'https://example.com/sft.jsonl'},)", "https://example.com"),
      ("URL as a corpus", "c.data.corpora = ({'path': 'https://example.com/c.txt', 'weight': 1.0},)", "https://"),
      ("missing tokenizer directory", "c.data.tokenizer = '/nonexistent/tokenizer'", "/nonexistent/tokenizer"),
    ]
  )
  prefix = (
    f"c.stages = ('init_model', 'pretrain', 'sft')\nc.data.tokenizer = {os.path.join(world, 'tokenizer')!r}\n"
    f"c.data.corpora = ({{'path': {os.path.join(world, 'pretrain.txt')!r}, 'weight': 1.0}},)\n"
    f"c.data.replay = ({{'path': {os.path.join(world, 'replay.jsonl')!r}}},)\n"
    f"c.data.sft = tuple({{'path': {world!r} + f'/sft_phase{{p}}.jsonl'}} for p in (1, 2))\n"
  )
  for i, (case, body, named) in enumerate(cases):
    config = c.config_file(f"{name}{i}", prefix + body)
    workdir = os.path.join(c.out, f"{name}-{i}")
    start = time.time()
    code, output = c.run(workdir, config=config, timeout=300)
    last = last_line(output)
    ok = code != 0 and named in last and not os.path.exists(workdir) and frames(output) <= MAX_FRAMES
    c.record(name, case, ok, f"{last[:160]} ({time.time() - start:.0f}s, traceback frames {frames(output)})")


def _copy(c: Checker, reference: str, name: str) -> tuple[str, Layout]:
  workdir = os.path.join(c.out, name)
  shutil.copytree(reference, workdir)
  return workdir, Layout(workdir)


def _shorten_part(layout: Layout) -> str:
  """Three rows lost from a detection part, the table deleted: what a bad copy after a kill leaves."""
  import pandas as pd

  part = os.path.join(layout.detection_parts, "part-00000.parquet")
  pd.read_parquet(part).iloc[:-3].to_parquet(part, index=False)
  os.remove(layout.detection)
  return part


DAMAGED_OUTPUTS = (  # (case, damage(layout) -> the damaged path, extra flags)
  ("examples.parquet truncated", lambda L: _do(faults.truncate, L.examples), ()),
  ("a dynamics log file truncated", lambda L: _do(faults.truncate, _first_log_file(L)), ()),
  ("sft/summary.json bytes flipped", lambda L: _do(faults.flip_bytes, L.summary("sft")), ()),
  ("detection.parquet truncated", lambda L: _do(faults.truncate, L.detection), ()),
  ("a detection part 3 rows short, detection.parquet deleted", _shorten_part, ()),
  ("attribution.parquet truncated", lambda L: _do(faults.truncate, L.attribution), ()),
  (
    "attribution.parquet truncated, then --force_rerun=report",
    lambda L: _do(faults.truncate, L.attribution),
    ("--force_rerun=report",),
  ),
  ("report.md deleted", lambda L: _do(os.remove, os.path.join(L.report, "report.md")), ()),
  ("a world data file edited", lambda L: _do(_drop_last_line, os.path.join(L.world, "sft_phase2.jsonl")), ()),
)


def _drop_last_line(path: str) -> None:
  lines = open(path).read().splitlines()
  with open(path, "w") as f:
    f.write("\n".join(lines[:-1]) + "\n")


def _do(damage, path: str) -> str:
  damage(path)
  return path


def _first_log_file(layout: Layout) -> str:
  return os.path.join(layout.dynamics(), sorted(f for f in os.listdir(layout.dynamics()) if f.startswith("batch"))[0])


def check_damaged_outputs(c: Checker, reference: str) -> None:
  """Each stage output damaged in a copy of the reference: the run must name the file, run the stage
  again (and what follows) and end with outputs identical to the reference's."""
  for i, (case, damage, flags_) in enumerate(DAMAGED_OUTPUTS):
    workdir, layout = _copy(c, reference, f"damaged-{i}")
    path = damage(layout)
    code, output = c.run(workdir, *flags_)
    named = path in output
    differ = outputs_differ(reference, workdir) if code == 0 else last_line(output)
    c.record(
      "damaged_output",
      case,
      code == 0 and named and not differ,
      differ or ("named, stage run again, outputs identical" if named else "the damaged file was not named"),
    )


def check_provenance(c: Checker, reference: str) -> None:
  """A truncated or deleted provenance: refused in one line, nothing touched, config.json kept; then
  adopted explicitly, which recomputes nothing."""
  workdir, layout = _copy(c, reference, "provenance")
  cases = (
    ("provenance.json truncated", lambda: faults.truncate(layout.provenance), (), "is damaged"),
    ("provenance.json deleted", lambda: os.remove(layout.provenance), (), "--adopt"),
    ("deleted, another learning rate", lambda: None, ("--config.sft.optimizer.learning_rate=0.01",), "--adopt"),
  )
  saved = open(layout.provenance, "rb").read()
  for case, damage, flags_, expected in cases:
    damage()
    before = tree_state(workdir)
    code, output = c.run(workdir, *flags_)
    ok = code != 0 and expected in last_line(output) and tree_state(workdir) == before and frames(output) <= MAX_FRAMES
    c.record("provenance", case, ok, f"{last_line(output)[:200]} (traceback frames {frames(output)})")
    if case.endswith("truncated"):
      with open(layout.provenance, "wb") as f:
        f.write(saved)
  code, output = c.run(workdir, "--adopt")
  ran = [line for line in output.splitlines() if ": running" in line]
  differ = outputs_differ(reference, workdir) if code == 0 else last_line(output)
  c.record(
    "provenance",
    "deleted, then --adopt",
    code == 0 and not ran and not differ,
    differ or (f"stages run: {ran[0]}" if ran else "adopted, nothing recomputed, outputs identical"),
  )


ARMS_CONFIG = """
c.stages = ('world', 'init_model', 'pretrain', 'sft', 'detect', 'diagnose', 'capability', 'arms', 'compare', 'report')
c.data.heldout = ({'path': '{workdir}/world/heldout.jsonl'},)
c.data.heldout_text = ({'path': '{workdir}/world/general.txt'},)
c.interventions.equal_compute = False
c.interventions.bootstrap_samples = 200
c.interventions.arms = ({'name': 'shuffle', 'intervention': 'shuffle', 'settings': {'every_steps': 2}},)
"""
SECOND_ARM = (
  "c.interventions.arms = c.interventions.arms + "
  "({'name': 'conflict', 'intervention': 'conflict', 'settings': {'delete': 'minority'}},)\n"
)


def check_arms_kill(c: Checker, reference: str) -> None:
  """An arm added and a forced arms re-run killed inside it; the plain re-run must leave a report
  whose comparison section is the comparison's (no stale report)."""
  workdir, layout = _copy(c, reference, "arms")
  one = c.config_file("arms_one", ARMS_CONFIG)
  two = c.config_file("arms_two", ARMS_CONFIG + SECOND_ARM)
  code, output = c.run(workdir, config=one)
  if code != 0:
    c.record("arms_kill", "one arm", False, last_line(output))
    return
  process = c.launch(workdir, "--force_rerun=arms", config=two)
  seen = []
  for line in process.stdout:
    seen.append(line)
    if "arm conflict (" in line:
      break
  time.sleep(8)
  landed = process.poll() is None
  os.killpg(process.pid, signal.SIGKILL)
  process.communicate()
  code, output = c.run(workdir, config=two)
  report = open(os.path.join(layout.report, "report.md")).read() if code == 0 else ""
  comparison = open(layout.compare_report).read().strip() if code == 0 else ""
  ok = landed and code == 0 and comparison and comparison in report and "conflict" in comparison
  c.record(
    "arms_kill",
    "arm added, forced arms re-run killed in it, plain re-run",
    ok,
    "killed 8 s into the new arm; report holds the comparison of both arms"
    if ok
    else ("the kill came after the run ended" if not landed else last_line(output) if code else "report lags"),
  )


def check_environment(c: Checker, reference: str) -> None:
  """Work directories that cannot be written, and the temporaries a killed run leaves."""
  blocker = os.path.join(c.out, "a-file")
  open(blocker, "w").close()
  cases = [("work directory is a file", blocker), ("work directory under a file", os.path.join(blocker, "work"))]
  mount = os.path.join(c.out, "ro")
  if os.geteuid() == 0:  # root writes through file modes: a read-only mount is the read-only directory
    os.makedirs(mount, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", mount], check=True)
    cases.append(("read-only work directory (read-only mount)", mount))
  else:
    os.makedirs(mount, mode=0o555)
    cases.append(("read-only work directory (mode 555)", mount))
  try:
    for case, workdir in cases:
      code, output = c.run(workdir, timeout=300)
      ok = code != 0 and workdir in last_line(output) and frames(output) <= MAX_FRAMES
      c.record("environment", case, ok, f"{last_line(output)[:160]} (traceback frames {frames(output)})")
  finally:
    if os.geteuid() == 0:
      subprocess.run(["umount", mount], check=False)
  workdir, layout = _copy(c, reference, "orphans")
  for parent in (layout.training("sft"), layout.detect):
    os.makedirs(os.path.join(parent, ".tmp-left-by-a-kill"))
  code, output = c.run(workdir)
  left = [d for d, names, _ in os.walk(workdir) for n in names if n.startswith(".tmp-")]
  differ = outputs_differ(reference, workdir) if code == 0 else last_line(output)
  c.record(
    "environment",
    "temporaries a killed run left",
    code == 0 and not left and not differ,
    differ or ("removed, outputs identical" if not left else f"left: {left[0]}"),
  )


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore of the comparisons
  out = os.path.abspath(FLAGS.out)
  if os.path.exists(out) and os.listdir(out):
    sys.exit(f"fault_check: --out={out} is not empty")
  c = Checker(out, FLAGS.config)
  reference = os.path.join(out, "reference")
  start = time.time()
  code, output = c.run(reference)
  if code != 0:
    sys.exit(f"fault_check: the reference run failed:\n{output[-3000:]}")
  duration = time.time() - start
  print(f"reference run: {duration:.0f}s", flush=True)
  rng = random.Random(FLAGS.seed)
  steps = {
    "kill": lambda: check_kills(c, reference, duration, FLAGS.kills, rng),
    "checkpoint": lambda: check_checkpoints(c, reference),
    "disk_full": lambda: check_disk_full(c, reference),
    "concurrent": lambda: check_concurrent(c, reference),
    "changed_config": lambda: check_changed_config(c, reference),
    "bad_config": lambda: check_bad_configs(c),
    "bad_input": lambda: check_bad_inputs(c, reference),
    "damaged_output": lambda: check_damaged_outputs(c, reference),
    "provenance": lambda: check_provenance(c, reference),
    "strict_record": lambda: check_bad_inputs(c, reference, faults.STRICT_DAMAGE, "strict_record"),
    "arms_kill": lambda: check_arms_kill(c, reference),
    "environment": lambda: check_environment(c, reference),
  }
  for name in FLAGS.classes:
    print(f"{name}:", flush=True)
    steps[name]()
  attempts = open(c.network_log).read().splitlines()
  c.record(
    "network",
    "connection attempts off this machine, all launches",
    not attempts,
    f"{len(attempts)} attempts" + (f": {attempts[0]}" if attempts else ""),
  )
  summary = {
    name: {"ok": sum(r["ok"] for r in rows), "tried": len(rows), "cases": rows} for name, rows in c.results.items()
  }
  with open(os.path.join(out, "faults.json"), "w") as f:
    json.dump({"reference_seconds": duration, "classes": summary, "seconds": time.time() - start}, f, indent=2)
  print("\nclass            survived/tried")
  for name, s in summary.items():
    print(f"{name:16s} {s['ok']}/{s['tried']}")
  print(f"total time {time.time() - start:.0f}s")
  if any(s["ok"] < s["tried"] for s in summary.values()):
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
