"""Shared set-up for fine-tuning a real HF checkpoint read from a local directory on a GPU/TPU host.

`init.hf_dir` is the *pretrained base* checkpoint (e.g. Qwen2.5-0.5B, not -Instruct): SFT starts
from it and the knowledge probes (P_exist, JSD, high-confidence errors, blind facts) ask it, as
the paper probes the pre-SFT model, in the plain question-answer layout a base model reads
(`detect.base_format`). An instruct checkpoint of the same family can be scored on the
same multiple-choice options as `detect.reference`, for comparison only. Point `data.sft` at your
SFT files, e.g.
  python launch.py --config=configs/qwen2_5_0_5b.py --workdir=/runs/qwen \\
      --config.init.hf_dir=/models/Qwen2.5-0.5B --config.detect.reference=/models/Qwen2.5-0.5B-Instruct
Defaults: bf16 compute over float32 master weights, FSDP over every device, the paper's 2 SFT
epochs, detection with both protocols (N = 5), the diagnosis of the paper's MC label, a report.
"""

import ml_collections

from configs import base


def get_config(
  base_dir: str, instruct_dir: str = "", sft_files: tuple[str, ...] = ("/data/sft/train.jsonl",)
) -> ml_collections.ConfigDict:
  c = base.get_config()
  c.stages = ("init_model", "sft", "detect", "diagnose", "report")
  c.init.update(hf_dir=base_dir, param_dtype="float32", dtype="bfloat16")
  c.mesh.shape = (1, -1, 1)
  c.data.update(sft=tuple({"path": path} for path in sft_files), buckets=(256, 512, 1024, 2048))
  c.sft.update(
    batch_size=64, grad_accum_steps=1, compute_dtype="bfloat16", epochs=2, log_every_steps=10, eval_every_steps=0
  )
  c.sft.optimizer.update(learning_rate=1e-5, warmup_ratio=0.03, decay="cosine", weight_decay=0.0)
  c.sft.checkpoint.update(every_steps=500, max_to_keep=2, async_save=True)
  c.detect.update(
    num_samples=5,
    temperature=0.7,
    max_new_tokens=256,
    batch_size=64,
    chunk_size=2048,
    base="model_init",
    reference=instruct_dir,
    verifier="rouge_l",
    verifier_threshold=0.6,
    # the pre-trained base checkpoint has never seen a chat template: ask it as base models are
    # evaluated, "Question: ...\nAnswer:" after 3 solved questions (ilp.detection.base_prompts)
    base_format="plain",
    base_shots=3,
  )
  return c
