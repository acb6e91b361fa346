"""The two facts notebook 04's optimizer study is built on, against closed forms: where the
modified Adafactor's second-moment decay reaches its cap, and what decoupled weight decay alone
does to a weight over a whole schedule (``wd x sum_t lr_t``)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vitlib.optim import adafactor_bv, make_optimizer


def _one_minus_beta2(tx, counts):
    """1 - b2_t read from the update: from v = 0, a gradient of 1 leaves v = (1 - b2_t)(1 + eps)."""
    params = {"w": jnp.zeros((1,))}
    state = tx.init(params)
    return np.asarray(jax.vmap(lambda c: tx.update(
        {"w": jnp.ones((1,))}, state._replace(count=c), params)[1].v["w"][0])(counts))


def test_adafactor_bv_beta2_follows_the_capped_rule_and_reaches_the_cap_at_5624():
    counts = np.arange(0, 12_000, dtype=np.int32)  # the 0-based count of update t = count + 1
    measured = _one_minus_beta2(adafactor_bv(beta1=None), jnp.asarray(counts))
    t = counts.astype(np.float64) + 1
    np.testing.assert_allclose(measured, 1 - np.minimum(0.999, 1 - t ** -0.8), rtol=2e-4)
    # 1 - t^-0.8 >= 0.999  <=>  t >= 1000^(1/0.8) = 5623.4
    first = math.ceil(1000 ** (1 / 0.8))
    assert first == 5624
    capped = measured == measured[-1]
    assert capped[first - 1:].all() and not capped[:first - 1].any()
    assert abs(measured[-1] - 0.001) < 1e-6


def test_adafactor_bv_beta2_cap_moves_with_its_options():
    counts = jnp.arange(0, 2000, dtype=jnp.int32)
    measured = _one_minus_beta2(adafactor_bv(beta1=None, decay_rate=0.5, beta2_cap=0.97), counts)
    first = math.ceil((1 / 0.03) ** 2)  # 1 - t^-0.5 >= 0.97 <=> t >= 1111.1
    capped = measured == measured[-1]
    assert capped[first - 1:].all() and not capped[:first - 1].any()
    assert abs(measured[-1] - 0.03) < 1e-6


def test_decoupled_decay_alone_leaves_prod_of_one_minus_lr_wd_and_integrates_to_wd_sum_lr():
    """With zero gradients Adam's direction is 0, so a decayed weight only shrinks by
    (1 - lr_t wd) per step: prod_t (1 - lr_t wd) ~ exp(-wd sum_t lr_t)."""
    steps, lr, wd, warmup, cooldown, timescale = 600, 3e-3, 0.4, 60, 60, 100
    tx = make_optimizer(dict(optimizer="adam", lr=lr, total_steps=steps, grad_clip_norm=None,
                             schedule=dict(kind="rsqrt", warmup_steps=warmup,
                                           cooldown_steps=cooldown, timescale=timescale),
                             weight_decay=[(".*", wd)]))
    params = {"kernel": jnp.full((4, 4), 2.0)}
    state = tx.init(params)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(zeros, state, params)
        return optax.apply_updates(params, updates), state
    for _ in range(steps):
        params, state = step(params, state)
    # The schedule written out independently (warmup, rsqrt, linear cooldown to 0 at the end).
    s = np.arange(steps, dtype=np.float64)
    rate = np.where(s < warmup, lr * s / warmup, lr / np.sqrt(1 + np.maximum(s - warmup, 0) / timescale))
    rate = rate * np.clip((steps - s) / cooldown, 0, 1)
    leaves = float(np.prod(1 - rate * wd))
    np.testing.assert_allclose(np.asarray(params["kernel"]) / 2.0, leaves, rtol=1e-4)
    assert abs(math.log(leaves) + wd * rate.sum()) < 1e-3 * wd * rate.sum()
