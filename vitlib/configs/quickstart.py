"""A small ViT on Fashion-MNIST for a 2-core CPU (``make quickstart``), with its 10-shot
accuracy on sklearn digits.

Nano/7 (width 128, depth 4, 16 tokens), 2,400 steps of 256, Adam, cosine schedule, decoupled
weight decay 0.5, no augmentation (in ~10 epochs the model underfits; flips cost minival
accuracy). Hyper-parameters were chosen on minival (runs trained on ``train``;
docs/training.md, "The quickstart recipe"); this final run trains on all of the original
training set (``train+minival``) and reports test accuracy.
"""
from vitlib.configs import base


def get_config():
    c = base.get_config()
    c.model.variant = "Nano/7"
    c.train_split = "train+minival"
    c.eval_splits = ("test",)
    c.total_steps = 2400
    c.batch_size = 256
    c.optim.lr = 2e-3
    c.optim.schedule.warmup_steps = 200
    c.optim.weight_decay = [(r".*", 0.5)]
    c.augment.crop_padding = 0
    c.augment.flip = False
    c.eval_every = 0  # evaluate once, at the end
    c.checkpoint_every = 1200
    return c
