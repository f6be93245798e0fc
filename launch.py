"""Entry point: python launch.py --config=configs/demo.py --workdir=runs/demo [--config.x=y ...]

Deliberately thin: it parses flags, starts the multi-host runtime when configured, and hands the
locked config to `ilp.pipeline`, where every stage lives (importable and testable without a CLI).
"""
from absl import app, flags
from ml_collections import config_flags

from ilp import console, parallel, pipeline, typed

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (a get_config() module).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for every artifact of the run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.configure_logging()
  # The multi-process runtime starts before JAX sees its devices (which the mesh check needs).
  parallel.initialize_distributed(typed.build(parallel.DistributedConfig, FLAGS.config.distributed, "distributed"))
  pipeline.run(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
