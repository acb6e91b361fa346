"""Learning-rate schedules of the paper: linear warmup, then rsqrt | linear | cosine | constant,
with an optional linear cooldown to zero over the last steps; and cooldown branches of an rsqrt
run (one long run yields models for many training lengths).

All schedules are optax schedules: ``fn(step) -> lr`` traceable by jax.
"""
from __future__ import annotations

import numbers

import jax.numpy as jnp

KINDS = ("rsqrt", "linear", "cosine", "constant")
# Kinds whose value before the cooldown does not depend on the run length: a branch that cools
# down early is then identical to the main run up to the branch point.
LENGTH_FREE_KINDS = ("rsqrt", "constant")


def make_schedule(base_lr: float, total_steps: int, kind: str = "rsqrt", warmup_steps: int = 0,
                  cooldown_steps: int = 0, timescale: int = 10_000, end_value: float = 0.0):
    """Linear warmup from 0 to ``base_lr`` over ``warmup_steps``, then by ``kind``:

    - ``rsqrt``: ``base_lr / sqrt(1 + (step - warmup_steps) / timescale)``
    - ``linear``: from ``base_lr`` to ``end_value`` at ``total_steps``
    - ``cosine``: half cosine from ``base_lr`` to ``end_value`` at ``total_steps``
    - ``constant``: ``base_lr``

    and, if ``cooldown_steps``, times ``(total_steps - step) / cooldown_steps`` over the last
    ``cooldown_steps`` steps, reaching zero at ``total_steps``.
    """
    validate_schedule(base_lr=base_lr, total_steps=total_steps, kind=kind,
                      warmup_steps=warmup_steps, cooldown_steps=cooldown_steps,
                      timescale=timescale, end_value=end_value)
    decay_steps = max(total_steps - warmup_steps, 1)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        after = jnp.maximum(step - warmup_steps, 0.0)
        if kind == "rsqrt":
            lr = base_lr / jnp.sqrt(1.0 + after / timescale)
        elif kind == "linear":
            progress = jnp.clip(after / decay_steps, 0.0, 1.0)
            lr = base_lr + (end_value - base_lr) * progress
        elif kind == "cosine":
            progress = jnp.clip(after / decay_steps, 0.0, 1.0)
            lr = end_value + 0.5 * (base_lr - end_value) * (1.0 + jnp.cos(jnp.pi * progress))
        else:
            lr = jnp.full_like(step, base_lr)
        if warmup_steps:
            lr = jnp.where(step < warmup_steps, base_lr * step / warmup_steps, lr)
        if cooldown_steps:
            lr = lr * jnp.clip((total_steps - step) / cooldown_steps, 0.0, 1.0)
        return lr

    return schedule


def lr_integral(base_lr: float, total_steps: int, kind: str = "rsqrt", warmup_steps: int = 0,
                cooldown_steps: int = 0, timescale: int = 10_000, end_value: float = 0.0) -> float:
    """``sum_t lr_t`` over the run's steps 0 .. total_steps - 1: decoupled weight decay acts
    through ``wd x`` this sum (the integrated decay), so runs of different lengths or learning
    rates compare at equal integrated decay, not at equal ``wd``."""
    import numpy as np

    schedule = make_schedule(base_lr, total_steps, kind, warmup_steps, cooldown_steps,
                             timescale, end_value)
    return float(np.asarray(schedule(np.arange(total_steps)), np.float64).sum())


def cooldown_branch(base_lr: float, branch_step: int, cooldown_steps: int,
                    kind: str = "rsqrt", warmup_steps: int = 0, timescale: int = 10_000):
    """The schedule of a branch that leaves the main run at ``branch_step`` and cools down
    linearly to zero over ``cooldown_steps`` (ending at ``branch_step + cooldown_steps``).

    Up to ``branch_step`` it equals the main run (any length, without cooldown there), so a
    branch can start from the main run's checkpoint at ``branch_step``.
    """
    if kind not in LENGTH_FREE_KINDS:
        raise ValueError(f"kind: cooldown branches need a schedule that does not depend on the "
                         f"run length; {kind!r} does; allowed: {list(LENGTH_FREE_KINDS)}")
    _check_int("branch_step", branch_step, minimum=warmup_steps)
    _check_int("cooldown_steps", cooldown_steps, minimum=1)
    return make_schedule(base_lr, branch_step + cooldown_steps, kind=kind,
                         warmup_steps=warmup_steps, cooldown_steps=cooldown_steps,
                         timescale=timescale)


def validate_schedule(base_lr: float, total_steps: int, kind: str, warmup_steps: int,
                      cooldown_steps: int, timescale: int, end_value: float = 0.0) -> None:
    if kind not in KINDS:
        raise ValueError(f"schedule.kind: {kind!r} is not allowed; choose one of {list(KINDS)}")
    if not isinstance(base_lr, (int, float)) or base_lr <= 0:
        raise ValueError(f"lr: must be a positive number, got {base_lr!r}")
    _check_int("total_steps", total_steps, minimum=1)
    _check_int("schedule.warmup_steps", warmup_steps, minimum=0)
    _check_int("schedule.cooldown_steps", cooldown_steps, minimum=0)
    _check_int("schedule.timescale", timescale, minimum=1)
    if not isinstance(end_value, (int, float)) or end_value < 0:
        raise ValueError(f"schedule.end_value: must be a number >= 0, got {end_value!r}")
    if warmup_steps + cooldown_steps > total_steps:
        raise ValueError(
            f"schedule.warmup_steps + schedule.cooldown_steps: {warmup_steps} + "
            f"{cooldown_steps} = {warmup_steps + cooldown_steps} is longer than total_steps "
            f"({total_steps}); allowed: warmup + cooldown <= total_steps (shorten them or "
            f"lengthen the run)")


def _check_int(field: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{field}: must be an integer >= {minimum}, got {value!r}")
