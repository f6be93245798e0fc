"""Entry point: python launch.py --config=configs/demo.py --workdir=runs/demo [--config.x=y ...]
(`python launch.py --describe` prints every config section and field: docs/configuration.md)

Deliberately thin: it parses flags, starts the multi-host runtime when configured, and hands the
locked config to `ilp.pipeline`, where every stage lives (importable and testable without a CLI).
A bad config field or bad input data ends the run with its one-line error and nothing written;
so does a work directory another launch holds, or a model whose parameters are not finite.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from ilp import config, console, describe, fileio, lock, machine, parallel, pipeline, typed
from ilp.data.records import DataError
from ilp.model.checkpoint import CorruptModelError
from ilp.model.safetensors_io import CheckpointError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (a get_config() module).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for every artifact of the run.")
flags.DEFINE_list(
  "force_rerun", [], "Stages to run again from scratch, with every later stage (after a change of their settings)."
)
flags.DEFINE_bool(
  "adopt",
  False,
  "Accept outputs whose settings the work directory's provenance does not record (it was deleted, or "
  "predates sealed records) as made with this config's settings, and seal them.",
)
flags.DEFINE_bool(
  "describe",
  False,
  "Print the config reference (every section and field with its type, "
  "default and meaning; docs/configuration.md) and exit.",
)

OVERRIDE = "--config."


def _parse(argv: list[str]) -> list[str]:
  """absl's flag parsing; a `--config.a.b=...` override that names no field is reported as such."""
  try:
    return FLAGS(argv)
  except (AttributeError, KeyError) as e:  # ml_collections: the override's path does not exist
    missing = str(e).strip("\"'")
    for arg in argv[1:]:
      path = arg[len(OVERRIDE) :].split("=")[0] if arg.startswith(OVERRIDE) else ""
      if missing in path.split("."):
        sys.exit(f"launch.py: {typed.ConfigError(path, 'unknown field')} (from {arg})")
    sys.exit(f"launch.py: bad config override: {e}")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.describe:
    print(describe.markdown(config.Config))
    return
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("--config and --workdir are required (or --describe)")
  console.configure_logging()
  try:
    # The multi-process runtime starts before JAX sees its devices (which the mesh check needs).
    parallel.initialize_distributed(typed.build(machine.DistributedConfig, FLAGS.config.distributed, "distributed"))
    pipeline.run(FLAGS.config, FLAGS.workdir, FLAGS.force_rerun, FLAGS.adopt)
    # Processes leave together: one done early would otherwise wait in JAX's shutdown barrier, which
    # gives up after `distributed.shutdown_timeout_seconds` while process 0 may still be writing.
    parallel.sync("pipeline done")
  except (typed.ConfigError, DataError, lock.LockError, CorruptModelError, CheckpointError, fileio.ResumeError) as e:
    sys.exit(f"launch.py: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=_parse)
