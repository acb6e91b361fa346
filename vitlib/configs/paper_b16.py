"""ViT-B/16 upstream with the paper's recipe on JPEG data (ImageNet-21k, or ImageNet-1k) through
the grain pipeline, with the paper's few-shot suite; for an accelerator host.

The recipe (Zhai et al. 2022, Sec. 3 and big_vision's configs): MAP head, modified Adafactor
(first momentum 0.9 in bf16, second-moment decay capped at 0.999), global-norm clipping 1.0,
lr 8e-4, linear warmup 10k steps, reciprocal-square-root decay (timescale 10k) with a linear
cooldown over the last 10k steps, decoupled weight decay 0.03 on the body and 3.0 on the head,
zero-initialised classifier, sigmoid cross-entropy with an initial head bias of -10, batch 4096,
224 px inception crop + flip, bf16 compute with fp32 parameters.

    python -m vitlib.train --config paper_b16 --workdir runs/b16_in21k \\
        --set dataset=imagenet21k --set data_dir=/data/tfds

For ImageNet-1k: ``--set dataset=imagenet2012 --set model.head_bias_init=-6.9
--set eval_splits="('minival=train[99%:]', 'test=validation')" --set train_split='train[:99%]'``
(from scratch it overfits without AugReg-style regularisation; see docs/full-profile.md).
"""
from vitlib.configs import base


def get_config():
    c = base.get_config()
    c.dataset = "imagenet21k"
    c.train_split = "train"
    c.eval_splits = ("minival=validation",)
    c.input.pipeline = "grain"
    c.input.workers = 8
    c.input.threads = 4
    c.input.crop = "inception"
    c.input.min_area = 0.05
    c.input.flip = True
    c.image_size = 224

    c.model.variant = "B/16"
    c.model.pool_type = "map"
    c.model.head_bias_init = -10.0
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.loss = "sigmoid"

    c.batch_size = 4096
    c.total_steps = 90_000
    c.optim.optimizer = "adafactor_bv"
    c.optim.optimizer_kwargs = {"beta1": 0.9, "beta2_cap": 0.999,
                                "momentum_dtype": "bfloat16"}
    c.optim.lr = 8e-4
    c.optim.grad_clip_norm = 1.0
    c.optim.schedule = dict(kind="rsqrt", warmup_steps=10_000, cooldown_steps=10_000,
                            timescale=10_000, end_value=0.0)
    c.optim.weight_decay = [(r"^head/", 3.0), (r".*", 0.03)]

    c.log_every = 100
    c.eval_every = 10_000
    c.eval_subset = 10_000
    c.eval_batch_size = 1024
    c.checkpoint_every = 1000
    c.fewshot.dataset = ""
    c.fewshot.suite = ("paper",)
    c.fewshot.shots = (1, 5, 10, 25)
    c.fewshot.seeds = (0, 1, 2)
    c.fewshot.l2 = "fixed"
    c.fewshot.every = 10_000
    return c
