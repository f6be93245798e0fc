"""The free-form ILP world: the world study with every question in one of 100+ paraphrases per
kind (no frequent prompt pattern, paraphrased near-duplicates) and SFT records without metadata
(no `meta.prerequisites`), so the diagnosis is tested where templates cannot help it. Diagnose
without the pre-training corpus with `--config.diagnose.corpus_evidence=False`.

  python launch.py --config=configs/free_form.py --workdir=runs/free [--config.world.seed=1]
"""

from configs import world


def get_config():
  c = world.get_config()
  c.world.free_form = True
  return c
