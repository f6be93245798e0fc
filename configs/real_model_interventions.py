"""The interventions study on a real checkpoint (a GPU/TPU host): the family's SFT run (e.g.
configs/qwen2_5_0_5b.py) as the baseline, diagnosed with the generative label, then the five
mitigations and their equal-compute controls. Give the knowledge collection (M-I, M-II) and the
general text mixed into continual pre-training, and held-out questions for the capability check:

  python launch.py --config=configs/real_model_interventions.py:qwen2_5_0_5b --workdir=/runs/qwen-iv \\
      --config.data.knowledge='({"path": "/data/wiki.jsonl"},)' \\
      --config.data.general='({"path": "/data/web.jsonl"},)' --config.data.heldout='({"path": "/data/heldout.jsonl"},)'

Continual pre-training of a 0.5-1B model is set from its SFT and its own pre-training, not from the
1M-parameter world's defaults (learning rate 1e-3, 200 steps of 16 x 128 tokens, which would
damage it): the peak learning rate is SFT's (1e-5: well below the 2-3e-4 these models were
pre-trained at, as continual pre-training recipes advise to limit forgetting), with 5% warmup;
the steps are a share of the baseline's SFT steps (0.5: CPT costs half of SFT, so the
equal-compute controls stay within a few epochs); sequences of 2048 tokens (their pre-training
context was 4096-8192; 2048 holds most documents whole) in batches of 64. Shuffle's dev check
keeps the paper's 500 steps; progressive epochs the paper's delta. Arms run one at a time
(`interventions.workers` 1): each uses every device of the job, in one or several processes.
"""

import importlib

FAMILIES = ("qwen2_5_0_5b", "llama3_2_1b", "olmo2_1b")
CPT = {"query": "entities", "steps_fraction": 0.5, "learning_rate": 1e-5, "warmup_steps": 20}


def get_config(family: str = "qwen2_5_0_5b"):
  if family not in FAMILIES:
    raise ValueError(f"family '{family}' is not one of {FAMILIES}")
  c = importlib.import_module(f"configs.{family}").get_config()
  c.stages = c.stages[:-1] + ("capability", "arms", "compare", "report")  # before the report
  c.detect.update(protocol="generative", label="sampled")
  c.diagnose.protocol = "generative"
  c.data.update(  # placeholders, as the family configs' SFT file: point them at your files
    knowledge=({"path": "/data/knowledge.jsonl"},),
    general=({"path": "/data/general.jsonl"},),
    heldout=({"path": "/data/heldout.jsonl"},),
  )
  c.pretrain.update(seq_length=2048, batch_size=64, log_every_steps=10)
  c.pretrain.optimizer.update(decay="cosine", weight_decay=0.0)
  c.interventions.arms = (
    {"name": "knowledge", "intervention": "knowledge", "settings": CPT},  # M-I
    {"name": "calibration", "intervention": "calibration", "settings": CPT},  # M-II
    {"name": "conflict", "intervention": "conflict"},  # M-III: delete (corpus) + bucket
    {"name": "shuffle", "intervention": "shuffle"},  # M-IV
    {"name": "progressive", "intervention": "progressive"},  # M-V
    {"name": "more_epochs", "intervention": "epochs", "settings": {"extra": 2}},  # Table 4's control
  )
  c.interventions.workers = 1
  return c
