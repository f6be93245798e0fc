"""Converts a local Hugging Face checkpoint to an ilp (orbax) checkpoint, and back.

  python scripts/convert_hf.py --to=orbax --src=/models/Qwen2.5-0.5B --dst=/ckpt/qwen-base
  python scripts/convert_hf.py --to=hf --src=/ckpt/qwen-sft --dst=/models/qwen-sft-hf

Parameters are placed straight onto a (data, fsdp, tensor) mesh over all devices (default: all
devices on fsdp), so a model larger than one device's memory converts too. The tokenizer, when
the source has one, travels along (`<dst>/tokenizer/` for orbax, the directory itself for HF).
"""

from __future__ import annotations

import logging

from absl import app, flags

from ilp import console, parallel
from ilp.model import build, checkpoint, hf

FLAGS = flags.FLAGS
flags.DEFINE_enum("to", None, ["orbax", "hf"], "Target format.")
flags.DEFINE_string("src", None, "Source checkpoint directory.")
flags.DEFINE_string("dst", None, "Destination directory (replaced atomically).")
flags.DEFINE_enum(
  "param_dtype",
  None,
  ["float32", "bfloat16", "float16"],
  "Parameter dtype to store (default: float32 into orbax, the checkpoint's own into HF).",
)
flags.DEFINE_bool(
  "scan_layers",
  False,
  "Into orbax: stack the layers on a leading axis, for a scanned model "
  "(model.scan_layers); into HF the checkpoint's own layout is read.",
)
flags.DEFINE_list("mesh_shape", ["1", "-1", "1"], "Mesh shape (data, fsdp, tensor); one entry may be -1.")
flags.DEFINE_integer("max_shard_mb", 2048, "Largest safetensors file written when converting to HF.")
flags.mark_flags_as_required(["to", "src", "dst"])

log = logging.getLogger("ilp.convert_hf")


def main(argv: list[str]) -> None:
  del argv
  console.configure_logging()
  mesh = parallel.make_mesh([int(s) for s in FLAGS.mesh_shape])
  if FLAGS.to == "orbax":
    cfg, _, state = hf.load_hf(
      FLAGS.src, mesh, param_dtype=FLAGS.param_dtype or "float32", scan_layers=FLAGS.scan_layers
    )
    checkpoint.save_params(FLAGS.dst, cfg, state, tokenizer=hf.find_tokenizer(FLAGS.src))
  else:
    cfg, _, state = checkpoint.load_params(FLAGS.src, mesh)
    hf.save_hf(cfg, state, FLAGS.dst, max_shard_bytes=FLAGS.max_shard_mb << 20, dtype=FLAGS.param_dtype)
    tokenizer = hf.find_tokenizer(checkpoint.tokenizer_dir(FLAGS.src))
    if tokenizer is not None:
      tokenizer.save_pretrained(FLAGS.dst)
  log.info(
    "converted %s (%s, %.1fM parameters) -> %s", FLAGS.src, cfg.family, build.param_count(state) / 1e6, FLAGS.dst
  )


if __name__ == "__main__":
  app.run(main)
