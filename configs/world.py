"""The ILP world study: generate the world, pre-train a tiny base model on it from scratch,
fine-tune it in two phases, each until it converges (the paper measures ILP after convergence),
detect what SFT failed to teach, diagnose why, and report.

SFT replays the pre-training corpus' question/answer documents as records (one step on them after
every 2 SFT steps, a third of the steps), as SFT mixtures that keep general instruction data do;
the world's conflicting facts are stated there in the SFT question's own words.

SFT is bounded, as the fine-tuning of a large model is relative to what it sees: only the attention
query and value projections train (LoRA's usual targets) and weight decay pulls them back toward
the base model (`decay_to="init"`, L2-SP), so the loss settles at an equilibrium instead of
memorising every record. Without the bound, any consistent fact, new (cause I) or rare (V), is
memorised given enough epochs and only II, III and IV survive convergence (docs/measurements.md, "The ILP
world after convergence"). The world of issues 1-21, whose "unlearned" examples were mostly not
yet trained, is `configs/world_under_trained.py`.

  python launch.py --config=configs/world.py --workdir=runs/world [--config.world.seed=1]
"""

from configs import base
from ilp import typed
from ilp.world.config import WorldConfig


def get_config():
  c = base.get_config()
  c.stages = ("world", "init_model", "pretrain", "sft", "detect", "diagnose", "report")
  c.world = typed.config_dict(WorldConfig())
  c.model.update(
    family="llama",
    vocab_size=0,
    hidden_size=128,
    intermediate_size=352,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=32,
    max_position_embeddings=256,
  )
  c.data.update(
    tokenizer="{workdir}/world/tokenizer",
    buckets=(24, 48),
    sft=({"path": "{workdir}/world/sft_phase1.jsonl"}, {"path": "{workdir}/world/sft_phase2.jsonl"}),
    corpora=({"path": "{workdir}/world/pretrain.txt", "weight": 1.0},),
    replay=({"path": "{workdir}/world/replay.jsonl"},),
  )
  c.data.template.update(
    use_chat_template=False, turn="{role} : {content} ", generation_prefix="assistant :", add_bos=True
  )
  c.pretrain.update(steps=800, batch_size=32, seq_length=64, log_every_steps=100)
  c.pretrain.optimizer.update(learning_rate=3e-3, warmup_steps=100, decay="cosine", weight_decay=0.01)
  c.pretrain.checkpoint.every_steps = 500
  c.sft.update(
    init_from="pretrain",
    batch_size=32,
    log_every_steps=20,
    phases=(
      {"name": "phase1", "phase": 1, "epochs": 5},  # at least 5 epochs each, then until
      {"name": "phase2", "phase": 2, "epochs": 5},
    ),
  )  # the convergence criterion holds
  c.sft.convergence.update(max_epochs=80, delta=0.02, window=2, cooldown_epochs=1)
  c.sft.replay.every_steps = 2
  c.sft.optimizer.update(learning_rate=1e-3, warmup_steps=10, decay="cosine", weight_decay=2.0, decay_to="init")
  c.sft.trainable = ("attn/[qv]$",)  # a bounded fine-tune (see the docstring)
  c.sft.checkpoint.update(every_steps=1000, phase_models=True)  # phase1/: the forgetting check samples it
  c.machine.compilation_cache = "{workdir}/.cache/xla"  # arms, re-runs and later stages reuse compiled programs
  c.detect.update(
    base="pretrain",
    num_samples=5,
    temperature=0.7,
    max_new_tokens=8,
    batch_size=32,
    chunk_size=256,
    require_converged=True,
  )  # ILP is measured after convergence
  return c
