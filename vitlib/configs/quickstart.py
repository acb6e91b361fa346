"""A small ViT on Fashion-MNIST for a 2-core CPU (``make quickstart``), with its 10-shot
accuracy on sklearn digits.

Nano/7 (width 128, depth 4, 16 tokens), 2,200 steps, with Adam, cosine schedule, decoupled
weight decay 0.05 and horizontal flips: the best of the configurations tried within a 10-minute
budget here (README, "Quickstart"). Random crops and batch 128 were tried and did worse at
this budget.
"""
from vitlib.configs import base


def get_config():
    c = base.get_config()
    c.model.variant = "Nano/7"
    c.total_steps = 2200
    c.batch_size = 256
    c.optim.lr = 2e-3
    c.optim.schedule.warmup_steps = 200
    c.optim.weight_decay = [(r".*", 0.05)]
    c.augment.crop_padding = 0
    c.augment.flip = True
    c.eval_every = 0  # evaluate once, at the end
    c.checkpoint_every = 1100
    return c
