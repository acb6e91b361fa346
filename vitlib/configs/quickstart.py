"""A small ViT on Fashion-MNIST that reaches >= 90% test accuracy in under 10 minutes on a
2-core CPU (``make quickstart``), with its 10-shot accuracy on sklearn digits."""
from vitlib.configs import base


def get_config():
    c = base.get_config()
    c.model.variant = "Pico/4"
    c.total_steps = 2000
    c.batch_size = 256
    c.optim.lr = 2e-3
    c.optim.schedule.warmup_steps = 200
    c.augment.crop_padding = 2
    c.augment.flip = True
    c.eval_every = 500
    c.checkpoint_every = 500
    return c
