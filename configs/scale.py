"""The ILP world at real scale, for `scripts/bench_scale.py`: about 100,000 SFT examples and a
pre-training corpus of about 1,000,000 documents (ten per person), run through every stage with a
small model on the CPU to measure each stage's time and memory, not to study ILP: pre-training is
short and SFT runs one epoch per phase, so the model is far from converged
(`detect.require_converged` is off).

The world's sizes are the demo's times 123 (entities times 50: a city stays a rare word among
100k answers). Its word-level vocabulary would hold every person's name (about 110k words, a
logit layer that dwarfs the model), so the run uses a byte-level BPE tokenizer of 8,192 tokens
trained on the world's text (`scripts/bench_scale.py` trains it to `{workdir}/bpe` after the
world stage; `ilp.data.tokenizer_training`).

  python scripts/bench_scale.py --workdir=runs/scale
"""

from configs import world

SCALE = 123
SIZES = dict(
  cities=2000,
  countries=200,
  jobs=600,
  codes=2000,
  control=200 * SCALE,
  missing=30 * SCALE,
  conflict=30 * SCALE,
  inconsistent_sets=15 * SCALE,
  forgetting=40 * SCALE,
  interference=400 * SCALE,
  rare=12 * SCALE,
  phase1_control=40 * SCALE,
  qa_people=1000,
  general_documents=20_000,
)


def get_config():
  c = world.get_config()
  c.world.update(SIZES)
  c.data.tokenizer = "{workdir}/bpe"
  c.data.buckets = (32, 64)
  c.model.update(hidden_size=64, intermediate_size=176, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32)
  c.pretrain.update(steps=300, batch_size=32, seq_length=64, log_every_steps=100)
  c.sft.update(
    batch_size=128,
    log_every_steps=200,
    phases=({"name": "phase1", "phase": 1, "epochs": 1}, {"name": "phase2", "phase": 2, "epochs": 1}),
  )
  c.sft.convergence.max_epochs = 0  # one epoch per phase: a cost measurement, not a study
  # fewer draws than the study's (N = 2, one run, 2 base samples reused as distractor candidates,
  # one entity swap): every probe still runs, at a third of the study's sampling
  c.detect.update(
    batch_size=256,
    chunk_size=4096,
    require_converged=False,
    max_new_tokens=8,
    num_samples=2,
    repeats=1,
    base_samples=2,
    blind_bon_k=2,
    pass_k=(1, 2),
    bon_k=(1, 2),
    entity_swaps=1,
  )
  c.detect.mc.update(base_samples=2, base_temperature=0.7)
  return c
