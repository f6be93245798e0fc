"""A reduced ILP world (configs/world.py shrunk): every stage of the study in a minute or two on
the 2-core CPU. `scripts/multiprocess_check.py` runs it in one and in two processes and compares;
`tests/e2e/test_world.py` runs a world of these sizes end to end.

  python launch.py --config=configs/world_small.py --workdir=runs/small
"""

from configs import world

SIZES = dict(
  seed=0,
  cities=8,
  countries=3,
  jobs=5,
  codes=10,
  control=16,
  missing=6,
  conflict=6,
  inconsistent_sets=3,
  forgetting=6,
  interference=10,
  rare=4,
  phase1_control=6,
  qa_people=5,
  mentions=4,
  conflict_mentions=8,
  general_documents=50,
  knowledge_documents=2,
)


def get_config():
  c = world.get_config()
  c.world.update(SIZES)
  c.model.update(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16)
  c.pretrain.update(steps=40, batch_size=16, log_every_steps=20)
  c.pretrain.checkpoint.every_steps = 20
  c.sft.update(
    batch_size=16,
    log_every_steps=10,
    phases=({"name": "phase1", "phase": 1, "epochs": 8}, {"name": "phase2", "phase": 2, "epochs": 4}),
  )
  c.sft.checkpoint.update(every_steps=5)
  c.detect.update(
    num_samples=2,
    pass_k=(1, 2),
    bon_k=(1, 2),
    max_new_tokens=4,
    base_samples=2,
    blind_bon_k=2,
    batch_size=16,
    chunk_size=32,
  )
  return c
