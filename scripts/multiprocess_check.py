"""JAX's multi-process runtime on CPU, proved against a one-process run of the same small world.

  python scripts/multiprocess_check.py [--out=/tmp/mp] [--config=configs/world_small.py]

Runs the config (every stage, world to report) in one process with 8 CPU devices (the reference)
and in two local processes with 4 devices each (`jax.distributed` over localhost, gloo
collectives), then checks, printing PASS or FAIL with its figures per check:

- rows: each process hands the devices only its own rows of a batch (a probe in two processes
  whose other rows are poisoned still assembles the true global batch);
- params: model_init, pretrain/final, sft/phase1 and sft/final within `--tolerance` (max abs diff);
- labels: every unlearned column of the detection table identical;
- attribution: the diagnosed cause of every example identical;
- outputs: the same files as the reference, each written once (one TensorBoard file per
  directory, no temporary files or duplicate dynamics rows, the same dynamics rows);
- kill both: both processes SIGKILLed after an SFT checkpoint; the re-run resumes and ends with
  the uninterrupted two-process run's parameters and dynamics log;
- kill one: process 1 gets SIGTERM mid-SFT; process 0 must exit with JAX's error within
  `--heartbeat` seconds plus a margin, and the re-run resumes as above.

The kill checks start from the two-process run's world, initial and pre-trained models and run
up to the sft stage. Exits 1 when a check fails.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING

from absl import app, flags, logging

if TYPE_CHECKING:
  import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout whose launch.py is run

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "", "Directory for the runs (default: a new temporary directory, removed on success).")
flags.DEFINE_string("config", "configs/world_small.py", "The config run in one and in two processes.")
flags.DEFINE_float("tolerance", 1e-5, "Largest max abs difference of any parameter.")
flags.DEFINE_integer("heartbeat", 10, "distributed.heartbeat_timeout_seconds of the two-process runs.")
flags.DEFINE_integer("timeout", 900, "Seconds a launch may take before it counts as hung.")
flags.DEFINE_integer("probe_process", -1, "Internal: run the rows probe as this process.")
flags.DEFINE_integer("probe_port", 0, "Internal: the rows probe's coordinator port.")

MODELS = ("model_init", "pretrain/final", "sft/phase1", "sft/final")
KILL_STAGES = "('world','init_model','pretrain','sft')"
JAX_DIED = "Terminating process because the JAX distributed service detected fatal errors"


def _env(devices: int) -> dict[str, str]:
  """The processes' environment, without a persistent compilation cache (JAX_COMPILATION_CACHE_DIR):
  two processes of one job reading one deadlocked in their first collective."""
  return {
    **{k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"},
    "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    "JAX_PLATFORMS": "cpu",
    "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
    "TOKENIZERS_PARALLELISM": "false",
  }


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(workdir: str, processes: int, extra: tuple[str, ...] = ()) -> list[subprocess.Popen]:
  """One launch: `processes` processes of 8 / processes devices each, logs beside the workdir."""
  port, procs = _free_port(), []
  for k in range(processes):
    args = [sys.executable, os.path.join(ROOT, "launch.py"), f"--config={FLAGS.config}", f"--workdir={workdir}", *extra]
    if processes > 1:
      args += [
        "--config.distributed.enabled=True",
        f"--config.distributed.coordinator_address=localhost:{port}",
        f"--config.distributed.num_processes={processes}",
        f"--config.distributed.process_id={k}",
        f"--config.distributed.heartbeat_timeout_seconds={FLAGS.heartbeat}",
      ]
    with open(f"{workdir}.{k}.log", "a") as log:
      procs.append(subprocess.Popen(args, cwd=ROOT, env=_env(8 // processes), stdout=log, stderr=subprocess.STDOUT))
  return procs


def _wait(procs: list[subprocess.Popen], timeout: float) -> list[int | None]:
  """Exit codes; a process still running after `timeout` is killed and reported as None."""
  deadline, codes = time.time() + timeout, []
  for p in procs:
    try:
      codes.append(p.wait(timeout=max(deadline - time.time(), 0.1)))
    except subprocess.TimeoutExpired:
      codes.append(None)
  for p in procs:
    if p.poll() is None:
      p.kill()
      p.wait()
  return codes


def _log(workdir: str, k: int) -> str:
  with open(f"{workdir}.{k}.log", errors="replace") as f:
    return f.read()


class Report:
  """PASS/FAIL lines with their figures."""

  def __init__(self):
    self.failed: list[str] = []

  def __call__(self, name: str, ok: bool, figures: str) -> bool:
    print(f"[{'PASS' if ok else 'FAIL'}] {name}: {figures}", flush=True)
    if not ok:
      self.failed.append(name)
    return ok


def _params_diff(a: str, b: str) -> float:
  """Max abs difference over every parameter of two model checkpoints."""
  import jax
  import numpy as np

  from ilp import parallel
  from ilp.model import checkpoint

  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  pa, pb = (jax.device_get(checkpoint.load_params(d, mesh)[2]) for d in (a, b))
  return max(
    float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb))
  )


def _files(workdir: str) -> list[str]:
  """The run's files, orbax array directories as one entry each (their shard files are per
  process by design) and TensorBoard files by directory (their names hold a time and host)."""
  out = set()
  for root, _, names in os.walk(workdir):  # hidden files too (temporary ones, the lock)
    for name in names:
      rel = re.sub(r"^((?:.*/)?(?:params|state))/.*$", r"\1/", os.path.relpath(os.path.join(root, name), workdir))
      out.add(re.sub(r"events\.out\.tfevents\..*$", "events.out.tfevents.*", rel))
  return sorted(out)


def _dynamics(workdir: str) -> "pd.DataFrame":
  from ilp.scoring import dynamics_log

  return dynamics_log.load(os.path.join(workdir, "sft", "dynamics"))


def check_rows(report: Report) -> None:
  """Runs the rows probe in two processes and checks their blocks cover the batch once."""
  port = _free_port()
  procs = [
    subprocess.Popen(
      [sys.executable, os.path.abspath(__file__), f"--probe_process={k}", f"--probe_port={port}"],
      env=_env(4),
      stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL,
      text=True,
    )
    for k in (0, 1)
  ]
  # The probe's one JSON line; gloo prints its connections to stdout too.
  lines = [
    next((s for s in p.communicate(timeout=FLAGS.timeout)[0].splitlines() if s.startswith("{")), "") for p in procs
  ]
  if not all(lines):
    report("rows", False, f"the probe failed (exit codes {[p.returncode for p in procs]})")
    return
  outs = [json.loads(line) for line in lines]
  blocks = sorted(tuple(o["rows"]) for o in outs)
  ok = blocks == [(0, 8), (8, 16)] and all(o["global_batch_true"] for o in outs)
  report(
    "rows",
    ok,
    "; ".join(
      f"process {o['process']} provides rows {o['rows'][0]}:{o['rows'][1]} of 16 "
      f"(the other rows poisoned), global batch {'true' if o['global_batch_true'] else 'WRONG'}"
      for o in outs
    ),
  )


def probe_rows(process_id: int, port: int) -> None:
  """One process of the rows probe: only this process's rows of the host batch are real."""
  import numpy as np

  from ilp import machine, parallel

  parallel.initialize_distributed(
    machine.DistributedConfig(
      enabled=True, coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id
    )
  )
  mesh = parallel.make_mesh((1, -1, 1))
  truth = np.arange(16 * 5, dtype=np.int32).reshape(16, 5)
  sharding = parallel.batch_sharding(mesh, truth.shape)
  rows = parallel.local_rows(sharding, truth.shape)
  host = np.full_like(truth, -1)
  host[rows] = truth[rows]
  assembled = parallel.to_host(parallel.global_batch({"x": host}, sharding, rows))["x"]
  print(
    json.dumps(
      {
        "process": process_id,
        "rows": [rows.start, rows.stop],
        "global_batch_true": bool(np.array_equal(assembled, truth)),
      }
    ),
    flush=True,
  )
  parallel.sync("probe done")


def compare(report: Report, reference: str, two: str) -> None:
  import numpy as np
  import pandas as pd

  from ilp.detection import columns as col

  diffs = {name: _params_diff(os.path.join(reference, name), os.path.join(two, name)) for name in MODELS}
  report(
    "params",
    max(diffs.values()) <= FLAGS.tolerance,
    ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()) + f" (max abs diff; tolerance {FLAGS.tolerance:.0e})",
  )
  da, db = (pd.read_parquet(os.path.join(w, "detect", "detection.parquet")) for w in (reference, two))
  columns = [c for c in da.columns if col.UNLEARNED in c]
  same = {c: int(sum(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(da[c], db[c]))) for c in columns}
  unlearned = lambda d: ", ".join(
    str(int(d[col.of(p, col.UNLEARNED)].sum())) for p in (col.GENERATIVE, col.MULTIPLE_CHOICE)
  )
  report(
    "labels",
    list(da[col.ID]) == list(db[col.ID]) and all(n == len(da) for n in same.values()),
    f"{len(da)} examples; identical in "
    + ", ".join(f"{c} {n}/{len(da)}" for c, n in same.items())
    + f"; unlearned (gen, mc): reference {unlearned(da)}, two processes {unlearned(db)}",
  )
  aa, ab = (pd.read_parquet(os.path.join(w, "diagnosis", "attribution.parquet")) for w in (reference, two))
  agree = int((aa[col.CAUSE].to_numpy() == ab[col.CAUSE].to_numpy()).sum())
  counts = {str(k): int(v) for k, v in ab[col.CAUSE].value_counts().items()}
  report(
    "attribution",
    list(aa[col.ID]) == list(ab[col.ID]) and agree == len(aa),
    f"cause identical for {agree}/{len(aa)} examples ({counts})",
  )
  fa, fb = _files(reference), _files(two)
  temporary = [f for f in fb if "/.tmp" in f"/{f}" or f.endswith(".lock")]
  events = {}
  for path in glob.glob(os.path.join(two, "**", "events.out.tfevents.*"), recursive=True):
    events[os.path.dirname(path)] = events.get(os.path.dirname(path), 0) + 1
  ya, yb = _dynamics(reference), _dynamics(two)
  keys = ["kind", "step", "eval_point", "id", "stream_position"]
  duplicated = int(yb.duplicated(keys).sum())
  same_rows = ya[keys].reset_index(drop=True).equals(yb[keys].reset_index(drop=True))
  loss = float(np.max(np.abs(ya["loss"].to_numpy() - yb["loss"].to_numpy()))) if same_rows else float("nan")
  report(
    "outputs",
    fa == fb and not temporary and set(events.values()) == {1} and not duplicated and same_rows,
    f"{len(fb)} files, {'the same as' if fa == fb else 'NOT the same as'} the reference's "
    f"({sorted(set(fa) ^ set(fb))[:5]}); temporary or lock files {temporary}; TensorBoard files per directory "
    f"{sorted(set(events.values()))}; dynamics {len(yb)} rows ({len(ya)} in the reference), {duplicated} "
    f"duplicated, rows {'identical' if same_rows else 'DIFFERENT'}, max loss diff {loss:.1e}",
  )


def _seed_from(source: str, workdir: str) -> None:
  """A kill check's work directory with the finished world, initial and pre-trained models."""
  os.makedirs(os.path.join(workdir, "pretrain"))
  for name in ("world", "model_init", "model_init.json", "pretrain/final", "pretrain/summary.json"):
    (shutil.copytree if os.path.isdir(os.path.join(source, name)) else shutil.copy)(
      os.path.join(source, name), os.path.join(workdir, name)
    )


def _until_checkpoint(workdir: str, procs: list[subprocess.Popen], step: int) -> int | None:
  """Waits for an SFT checkpoint at `step` or later; its step, or None if the run ended first."""
  directory = os.path.join(workdir, "sft", "checkpoints")
  while all(p.poll() is None for p in procs):
    steps = [int(d) for d in (os.listdir(directory) if os.path.isdir(directory) else []) if d.isdigit()]
    if steps and max(steps) >= step:
      return max(steps)
    time.sleep(0.02)
  return None


def _resume(report: Report, name: str, workdir: str, two: str, start: float) -> None:
  procs = _start(workdir, 2, (f"--config.stages={KILL_STAGES}",))
  codes = _wait(procs, FLAGS.timeout)
  logs = [_log(workdir, k) for k in (0, 1)]
  resumed = re.findall(r"resumed from step (\d+) of (\d+)", logs[0])
  diff = (
    _params_diff(os.path.join(two, "sft", "final"), os.path.join(workdir, "sft", "final")) if codes == [0, 0] else None
  )
  same_rows = codes == [0, 0] and _dynamics(two).equals(_dynamics(workdir))
  report(
    f"{name}, re-run",
    codes == [0, 0] and bool(resumed) and diff == 0.0 and same_rows,
    f"exit codes {codes}; resumed from step {resumed[-1][0] + ' of ' + resumed[-1][1] if resumed else 'NONE'}; "
    f"sft/final vs the uninterrupted two-process run: max abs diff {diff}; dynamics log "
    f"{'identical' if same_rows else 'DIFFERENT'}; {time.time() - start:.0f} s for the run, the kill and the re-run",
  )


def kill_both(report: Report, out: str, two: str, total_steps: int) -> None:
  start, workdir = time.time(), os.path.join(out, "kill_both")
  _seed_from(two, workdir)
  procs = _start(workdir, 2, (f"--config.stages={KILL_STAGES}",))
  step = _until_checkpoint(workdir, procs, total_steps // 2)
  for p in procs:
    p.send_signal(signal.SIGKILL)
  _wait(procs, 60)
  final = os.path.exists(os.path.join(workdir, "sft", "final"))
  report(
    "kill both",
    step is not None and not final,
    f"SIGKILL to both processes once checkpoint step {step} of {total_steps} was written; sft/final "
    f"{'exists (the run ended first)' if final else 'absent'}",
  )
  _resume(report, "kill both", workdir, two, start)


def kill_one(report: Report, out: str, two: str, total_steps: int) -> None:
  start, workdir = time.time(), os.path.join(out, "kill_one")
  _seed_from(two, workdir)
  procs = _start(workdir, 2, (f"--config.stages={KILL_STAGES}",))
  step = _until_checkpoint(workdir, procs, total_steps // 2)
  killed = time.time()
  procs[1].send_signal(signal.SIGTERM)
  code1 = _wait(procs[1:], 60)[0]
  code0 = _wait(procs[:1], FLAGS.heartbeat + 60)[0]
  after = time.time() - killed
  message = next(
    (line[line.index("Terminating") :][:140] for line in _log(workdir, 0).splitlines() if JAX_DIED in line), ""
  )
  report(
    "kill one",
    step is not None and code0 not in (0, None) and bool(message) and after <= FLAGS.heartbeat + 30,
    f"SIGTERM to process 1 at checkpoint step {step} of {total_steps} (exit code {code1}); process 0 exited "
    f"with code {code0} {after:.1f} s later (heartbeat timeout {FLAGS.heartbeat} s): {message!r}",
  )
  _resume(report, "kill one", workdir, two, start)


def main(argv: list[str]) -> None:
  del argv
  if FLAGS.probe_process >= 0:
    probe_rows(FLAGS.probe_process, FLAGS.probe_port)
    return
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint it reads for the comparisons
  out = FLAGS.out or tempfile.mkdtemp(prefix="multiprocess_check-")
  os.makedirs(out, exist_ok=True)
  report = Report()
  check_rows(report)
  runs = {}
  for name, processes in (("reference", 1), ("two_processes", 2)):
    workdir, start = os.path.join(out, name), time.time()
    codes = _wait(_start(workdir, processes), FLAGS.timeout)
    runs[name] = workdir
    if not report(
      f"{name} run",
      codes == [0] * processes,
      f"{processes} process(es) x {8 // processes} devices, exit codes {codes}, {time.time() - start:.0f} s "
      f"(logs {workdir}.<k>.log)",
    ):
      sys.exit(f"{len(report.failed)} check(s) failed; runs in {out}")
  compare(report, runs["reference"], runs["two_processes"])
  with open(os.path.join(runs["two_processes"], "sft", "summary.json")) as f:
    total_steps = json.load(f)["steps"]
  kill_both(report, out, runs["two_processes"], total_steps)
  kill_one(report, out, runs["two_processes"], total_steps)
  if report.failed:
    sys.exit(f"FAIL: {len(report.failed)} check(s) failed ({', '.join(report.failed)}); runs in {out}")
  print(f"PASS: every check; runs in {out}" if FLAGS.out else "PASS: every check")
  if not FLAGS.out:
    shutil.rmtree(out)


if __name__ == "__main__":
  app.run(main)
