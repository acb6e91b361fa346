"""Optimizers and learning-rate schedules as optax transformations.

- ``optimizers``: ``adafactor_bv`` (the paper's modified Adafactor), ``adam_hp`` (bf16 first
  moment), the fp32 Adam / stock Adafactor / SGD baselines, ``optimizer_by_name``
- ``weight_decay``: decoupled per-parameter decay from (regex, rate) rules
- ``chain``: ``make_optimizer`` (clip -> direction -> decay -> lr), ``make_sweepable_optimizer``
  (lr and decay as step inputs), ``paper_recipe``
- ``schedules``: warmup + rsqrt / linear / cosine / constant with cooldown, ``cooldown_branch``
"""
from vitlib.optim.chain import make_optimizer, make_sweepable_optimizer, paper_recipe
from vitlib.optim.optimizers import adafactor_bv, adam_hp
from vitlib.optim.schedules import make_schedule

__all__ = ["adafactor_bv", "adam_hp", "make_optimizer", "make_schedule",
           "make_sweepable_optimizer", "paper_recipe"]
