"""Console output for the command-line tools: our progress at INFO, libraries' chatter hidden."""

import logging

from absl import flags
from absl import logging as absl_logging


def configure_logging() -> None:
  """Shows `ilp.*` INFO lines; orbax/jax (which log through absl) stay at WARNING unless
  the user passed --verbosity."""
  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("ilp").setLevel(logging.INFO)
