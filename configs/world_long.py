"""The long-answer ILP world: the free-form world (paraphrased questions, no metadata) whose answers
are sentences in varied wording ("the birthplace of p5 is c3 ."), paraphrased across agreeing
near-duplicates and contradicting where inconsistent data is planted: what a user's free-form SFT
set looks like to the method. Answers are graded by the shared equivalence (`detect.answers`),
not by string match. Diagnose without the pre-training corpus with
`--config.diagnose.corpus_evidence=False`.

  python launch.py --config=configs/world_long.py --workdir=runs/long [--config.world.seed=1]
"""

from configs import free_form


def get_config():
  c = free_form.get_config()
  c.world.answers = "long"
  c.detect.update(verifier="equivalent", max_new_tokens=16)  # a sentence of up to 14 words and its end
  return c
