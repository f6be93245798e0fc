"""The ILP world as it was before issue 22, for comparison: paraphrased inconsistent pairs, no
replay, full fine-tuning with no weight decay, fixed epochs (30 in phase 1, 3 in phase 2) and no
convergence requirement. Its phase-2
loss is still falling when detection runs, so most of what it calls unlearned is under-training
(ten more phase-2 epochs remove ~93% of it).

  python launch.py --config=configs/world_under_trained.py --workdir=runs/under_trained
"""

from configs import world


def get_config():
  c = world.get_config()
  c.world.design = "under_trained"
  c.data.replay = ()
  c.sft.replay.every_steps = 0
  c.sft.convergence.max_epochs = 0
  c.sft.trainable = ()
  c.sft.optimizer.update(weight_decay=0.0, decay_to="zero")
  c.detect.require_converged = False
  c.sft.phases = ({"name": "phase1", "phase": 1, "epochs": 30}, {"name": "phase2", "phase": 2, "epochs": 3})
  return c
