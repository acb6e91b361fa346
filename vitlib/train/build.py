"""Build a run from its config: the checks, the model, the optimizer, the training input
(in-memory or grain) and the compiled programs, gathered in a ``Run`` that the loop, the evaluation and the result use."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple

import jax

from vitlib.data import datasets, grain_pipeline, sources
from vitlib.data.augment import Augment
from vitlib.data.batches import MemoryInput, nested_subset
from vitlib.evals import fewshot, suite
from vitlib.models import ViT, vit_config
from vitlib.models.attention import check_attention_backend
from vitlib.models.variants import ATTENTION_KERNELS, parse_variant, untiled_pixels
from vitlib.optim.chain import SweepableOptimizer, make_sweepable_optimizer
from vitlib.train.checkpoints import Checkpointer
from vitlib.train.programs import Programs, programs_for
from vitlib.train.sharding import check_batch_size, make_mesh
from vitlib.train.steps import check_loss, micro_batches_for


def check_config(config) -> None:
    """The config's run fields, checked before anything is loaded or created."""
    for key in ("batch_size", "total_steps"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise ValueError(f"{key}: must be a positive integer, got {config[key]!r}")
    for key in ("log_every", "eval_every", "checkpoint_every", "eval_batch_size", "image_size",
                "eval_subset"):
        if not isinstance(config[key], int) or config[key] < 0:
            raise ValueError(f"{key}: must be an integer >= 0, got {config[key]!r}")
    steps = config.checkpoint_steps
    if not isinstance(steps, (tuple, list)) or not all(
            isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= config.total_steps
            for s in steps):
        raise ValueError(f"checkpoint_steps: {steps!r} is not allowed; use a tuple of integers "
                         f"in [1, total_steps={config.total_steps}]")
    splits = config.fewshot.eval_splits
    if (config.fewshot.dataset and (not isinstance(splits, (tuple, list)) or not splits
                                    or not set(splits) <= {"test", "minival"})):
        raise ValueError(f"fewshot.eval_splits: {splits!r} is not allowed; use a non-empty "
                         f"tuple of 'test' and/or 'minival'")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or config.seed < 0:
        raise ValueError(f"seed: must be an integer >= 0, got {config.seed!r}")
    micro_batches_for(config.batch_size, config.micro_batch_size, jax.device_count())
    check_loss(config.loss, config.label_smoothing)
    try:
        make_tx(config)
    except ValueError as err:  # the optimizer's messages name fields inside ``optim``
        raise ValueError(_in_optim(str(err))) from None
    check_input(config)
    check_model(config.model)
    if config.image_size:  # else the dataset's own size, checked once it is known
        check_patch_tiles(config.model, config.image_size)
    if config.input.pipeline == "memory":
        datasets.check_dataset(config.dataset, config.get("data_dir") or None)
    check_fewshot(config.fewshot)
    if config.fewshot.dataset:
        try:
            datasets.check_dataset(config.fewshot.dataset, config.get("data_dir") or None)
        except datasets.DataError as err:
            raise datasets.DataError(f"fewshot.{err}") from None


def check_fewshot(fewshot_config) -> None:
    """The few-shot fields that need no data to check: the suite's entries, l2 and interval."""
    if fewshot_config.suite:
        suite.parse_suite(fewshot_config.suite)
    if fewshot_config.l2 not in fewshot.L2_MODES:
        raise ValueError(f"fewshot.l2: {fewshot_config.l2!r} is not allowed; choose one of "
                         f"{list(fewshot.L2_MODES)}")
    cache = fewshot_config.cache_gib
    if isinstance(cache, bool) or not isinstance(cache, (int, float)) or cache < 0:
        raise ValueError(f"fewshot.cache_gib: {cache!r} is not allowed; use a number >= 0 "
                         f"(GiB; 0 = no cache)")
    every = fewshot_config.every
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ValueError(f"fewshot.every: {every!r} is not allowed; use an integer >= 0 (0 = "
                         f"with every evaluation)")


PIPELINES = ("memory", "grain")


def check_input(config) -> None:
    """The ``input`` fields (how training images reach the model)."""
    if config.input.pipeline not in PIPELINES:
        raise ValueError(f"input.pipeline: {config.input.pipeline!r} is not allowed; choose "
                         f"one of {list(PIPELINES)}")
    if config.input.pipeline == "grain":
        grain_pipeline.Preprocess(config.image_size, config.input.crop, config.input.min_area,
                                  config.input.flip, config.input.bad_images,
                                  config.input.decoder)
        grain_pipeline.check_workers(config.input.workers, config.input.threads,
                                     config.input.worker_buffer)
        if any(config.augment.values()):
            raise ValueError(f"augment: {config.augment.to_dict()} applies to the 'memory' "
                             f"pipeline; with 'grain' use input.crop and input.flip")


def check_model(model_config) -> None:
    """The attention kernel: a known one, on a backend that has it."""
    if model_config.attention not in ATTENTION_KERNELS:
        raise ValueError(f"model.attention: {model_config.attention!r} is not allowed; choose "
                         f"one of {list(ATTENTION_KERNELS)}")
    check_attention_backend(model_config.attention)


def check_patch_tiles(model_config, image_size: int) -> None:
    """Refuses a patch that does not tile the image (VALID patchify would drop the remainder
    pixels) unless ``model.drop_remainder_pixels``."""
    patch = parse_variant(model_config.variant)["patch_size"]
    dropped = untiled_pixels(image_size, patch)
    if dropped and not model_config.drop_remainder_pixels:
        tiling = [p for p in range(1, image_size + 1) if image_size % p == 0]
        raise ValueError(
            f"model.variant: {model_config.variant!r}: {dropped}; allowed: a patch that divides "
            f"{image_size} ({', '.join(map(str, tiling))}), an image_size that is a multiple "
            f"of {patch}, or --set model.drop_remainder_pixels=True to train so")


def _in_optim(message: str) -> str:
    """An optimizer-config message with its fields named as config keys (``optim.lr``)."""
    if message.startswith("optimizer config:"):
        return message.replace("optimizer config:", "optim:", 1)
    message = re.sub(r"(?<![\w.])(schedule\.\w+)", r"optim.\1", message)
    return message if message.startswith(("optim.", "total_steps")) else f"optim.{message}"


def build_model(config, image_size: int, num_classes: int) -> ViT:
    m = config.model
    shape = {}
    for field in ("width", "depth", "mlp_dim", "num_heads"):
        value = m[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"model.{field}: must be an integer >= 0 (0 = the variant's), got "
                             f"{value!r}")
        if value:
            shape[field] = value
    check_patch_tiles(m, image_size)  # the kernel's backend: fit's check_config, up front
    return ViT(vit_config(m.variant, **shape, image_size=image_size, num_classes=num_classes,
                          pool_type=m.pool_type, posemb=m.posemb,
                          representation_size=m.representation_size or None, dtype=m.dtype,
                          param_dtype=m.param_dtype, scan=m.scan, remat_policy=m.remat_policy,
                          head_bias_init=m.head_bias_init, attention=m.attention))


def optimizer_config(config) -> dict:
    return {**config.optim.to_dict(), "total_steps": config.total_steps}


def make_tx(config) -> SweepableOptimizer:
    """The run's optimizer: ``make_optimizer``'s chain with lr and weight decay as inputs."""
    return make_sweepable_optimizer(optimizer_config(config))


class Run(NamedTuple):
    """What one training run is made of, built from its config by ``build_run``."""
    config: Any
    workdir: Path
    train_input: Any  # batches.MemoryInput or grain_pipeline.GrainInput
    model: ViT
    optimizer: SweepableOptimizer
    mesh: Any
    programs: Programs
    abstract_state: Any  # the TrainState's structure with shardings, for restoring checkpoints
    checkpointer: Checkpointer  # the run's own checkpoints (resume)
    branch_points: Any  # Checkpointer of ``config.checkpoint_steps`` (kept for branches), or None

    def close(self) -> None:
        self.checkpointer.close()
        if self.branch_points is not None:
            self.branch_points.close()


def train_input_of(config):
    """(the run's training input, its image size, channels, number of classes)."""
    data_dir = config.data_dir or None
    if config.input.pipeline == "grain":
        source = sources.nested_subset_source(
            sources.open_source(config.dataset, config.train_split, data_dir,
                                label_key=config.input.label_key), config.train_examples)
        preprocess = grain_pipeline.Preprocess(
            config.image_size, config.input.crop, config.input.min_area, config.input.flip,
            config.input.bad_images, config.input.decoder)
        return (grain_pipeline.GrainInput(source, config.batch_size, config.seed, preprocess,
                                          config.input.workers, config.input.threads,
                                          config.input.worker_buffer),
                config.image_size, 3, source.num_classes)
    train_x, train_y = nested_subset(
        *datasets.load_split(config.dataset, config.train_split, data_dir), config.train_examples)
    augment = Augment(**config.augment.to_dict())
    return (MemoryInput(train_x, train_y, config.batch_size, config.seed, augment),
            config.image_size or train_x.shape[1], train_x.shape[3],
            datasets.num_classes(config.dataset, data_dir))


def build_run(config, workdir: Path) -> Run:
    """Open the training data, build model and optimizer, compile (or reuse) the programs and
    open the checkpoint folders of ``workdir``."""
    train_input, image_size, channels, num_classes = train_input_of(config)
    model = build_model(config, image_size, num_classes)
    optimizer = make_tx(config)
    mesh = make_mesh()
    check_batch_size(config.batch_size, mesh)
    if config.eval_batch_size % mesh.devices.size:
        raise ValueError(f"eval_batch_size: {config.eval_batch_size} does not split over "
                         f"{mesh.devices.size} devices; allowed: a multiple of it")

    image_shape = (image_size, image_size, channels)
    programs = programs_for(config, model, optimizer.tx, image_shape)
    abstract_state = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        jax.eval_shape(programs.init, 0), programs.shardings)
    checkpointer = Checkpointer(workdir / "checkpoints")
    branch_points = Checkpointer(workdir / "branch_points", max_to_keep=None) \
        if config.checkpoint_steps else None
    return Run(config, workdir, train_input, model, optimizer, mesh, programs,
               abstract_state, checkpointer, branch_points)
