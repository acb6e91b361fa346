"""Optimizers against straightforward numpy implementations written here, state dtypes and
shapes, the decoupled weight decay and its masks on a real ViT parameter tree."""
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

from vitlib.models import ViT, vit_config
from vitlib.optim.chain import make_optimizer, paper_recipe
from vitlib.optim.optimizers import adafactor_bv, adam_hp
from vitlib.optim.weight_decay import param_path, weight_decay_tree

SHAPES = {
    "matrix": (64, 48),  # factored over both axes
    "tall3d": (3, 40, 50),  # factored over its two largest axes (1, 2)
    "wide3d": (40, 2, 36),  # largest axes are 0 and 2
    "thin": (16, 100),  # second-largest < 32: full second moment
    "vector": (50,),
    "scalar": (),
}
STEPS = 6


def _random_tree(seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return {k: (scale * rng.standard_normal(s)).astype(np.float32) for k, s in SHAPES.items()}


def _grads_sequence():
    return [_random_tree(100 + i, scale=0.1 * (i + 1)) for i in range(STEPS)]


def _bf16(x):
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def _run(tx, grads_seq, params):
    params = jax.tree_util.tree_map(jnp.asarray, params)
    state = tx.init(params)
    outs = []
    for g in grads_seq:
        u, state = tx.update(jax.tree_util.tree_map(jnp.asarray, g), state, params)
        outs.append(jax.tree_util.tree_map(np.asarray, u))
    return outs, state


# ------------------------------------------------------------------ numpy references

def _np_adafactor_bv(grads_seq, beta1=0.9, decay_rate=0.8, cap=0.999, eps=1e-30, min_dim=32,
                     clip=None):
    """Reference written from the paper's description, one parameter at a time."""
    outs = []
    state = {}
    for t, grads in enumerate(grads_seq):
        b2 = min(cap, 1.0 - (t + 1.0) ** (-decay_rate))
        step_out = {}
        for name, g in grads.items():
            g = g.astype(np.float64)
            g2 = g * g + eps
            shape = g.shape
            big = sorted(range(len(shape)), key=lambda i: shape[i])[-2:] if len(shape) >= 2 \
                else []
            if big and shape[big[0]] >= min_dim:
                d_second, d_first = big  # second-largest, largest
                row_prev, col_prev = state.get((name, "row"), 0.0), state.get((name, "col"), 0.0)
                row = b2 * row_prev + (1 - b2) * g2.mean(axis=d_first)
                col = b2 * col_prev + (1 - b2) * g2.mean(axis=d_second)
                state[(name, "row")], state[(name, "col")] = row, col
                # v_hat[i, j] = row[i] * col[j] / mean(row)
                row_e = np.expand_dims(row, d_first)
                col_e = np.expand_dims(col, d_second)
                row_mean = np.expand_dims(
                    row.mean(axis=d_second - (d_second > d_first), keepdims=True), d_first)
                v_hat = row_e * col_e / row_mean
            else:
                v_hat = b2 * state.get((name, "v"), 0.0) + (1 - b2) * g2
                state[(name, "v")] = v_hat
            u = g / np.sqrt(v_hat)
            if clip is not None:
                u = u / max(1.0, np.sqrt(np.mean(u * u)) / clip)
            m = beta1 * state.get((name, "m"), 0.0) + (1 - beta1) * u
            state[(name, "m")] = _bf16(m)  # stored in bfloat16
            step_out[name] = m
        outs.append(step_out)
    return outs, state


def _np_adam(grads_seq, b1=0.9, b2=0.999, eps=1e-8, store_m=lambda m: m):
    outs, m, v = [], {}, {}
    for t, grads in enumerate(grads_seq, 1):
        step_out = {}
        for name, g in grads.items():
            g = g.astype(np.float64)
            mt = b1 * m.get(name, 0.0) + (1 - b1) * g
            v[name] = b2 * v.get(name, 0.0) + (1 - b2) * g * g
            step_out[name] = (mt / (1 - b1 ** t)) / (np.sqrt(v[name] / (1 - b2 ** t)) + eps)
            m[name] = store_m(mt)
        outs.append(step_out)
    return outs, m, v


def _assert_close_trees(ours, ref, rtol, atol=1e-7, leaf_scale_atol=0.0):
    """``leaf_scale_atol`` adds an absolute tolerance relative to each leaf's largest entry."""
    for step, (a, b) in enumerate(zip(ours, ref)):
        for name in SHAPES:
            tol = atol + leaf_scale_atol * float(np.max(np.abs(b[name])))
            np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=tol,
                                       err_msg=f"step {step}, leaf {name}")


# ------------------------------------------------------------------ tests

@pytest.mark.parametrize("clip", [None, 0.5])
def test_adafactor_bv_matches_numpy_reference(clip):
    grads = _grads_sequence()
    ours, state = _run(adafactor_bv(clipping_threshold=clip), grads, _random_tree(0))
    ref, ref_state = _np_adafactor_bv(grads, clip=clip)
    # bf16 storage of the momentum rounds differently only where float32 and float64 straddle
    # a bf16 rounding boundary; that perturbs later steps by about one bf16 ulp (2^-8) of the
    # leaf's scale, so allow that much absolute error per leaf.
    _assert_close_trees(ours, ref, rtol=1e-4, leaf_scale_atol=2 ** -8)
    np.testing.assert_allclose(ours[0]["matrix"], ref[0]["matrix"], rtol=1e-5)  # before rounding
    for name in SHAPES:
        ref_m = ref_state[(name, "m")]
        np.testing.assert_allclose(np.asarray(state.mu[name], np.float32), ref_m, rtol=1e-2,
                                   atol=2 ** -8 * float(np.max(np.abs(ref_m))))


def test_adafactor_bv_without_momentum_equals_optax_factored_rms_with_capped_decay():
    """A second, independent reference: optax's factored RMS with the paper's decay function."""
    grads, params = _grads_sequence(), _random_tree(0)
    capped = lambda i, rate: jnp.minimum(0.999, 1.0 - (jnp.asarray(i, jnp.float32) + 1) ** -rate)
    reference = optax.scale_by_factored_rms(min_dim_size_to_factor=32, decay_rate_fn=capped)
    ours, _ = _run(adafactor_bv(beta1=None), grads, params)
    ref, _ = _run(reference, grads, params)
    _assert_close_trees(ours, ref, rtol=1e-5)


def test_adafactor_bv_decay_is_capped():
    """After many steps the second moment keeps forgetting at rate 1 - 0.999, not -> 1."""
    tx = adafactor_bv(beta1=None)
    params = {"v": jnp.zeros((3,))}
    state = tx.init(params)
    state = state._replace(count=jnp.asarray(10 ** 6, jnp.int32),
                           v={"v": jnp.ones((3,), jnp.float32)})
    _, state = tx.update({"v": jnp.zeros((3,))}, state, params)
    np.testing.assert_allclose(state.v["v"], 0.999 + 0.001 * 1e-30, rtol=1e-7)


def test_adafactor_bv_state_dtypes_and_shapes():
    params = {k: jnp.asarray(v) for k, v in _random_tree(0).items()}
    state = adafactor_bv().init(params)
    assert state.v_row["matrix"].shape == (48,) and state.v_col["matrix"].shape == (64,)
    assert state.v_row["tall3d"].shape == (3, 40) and state.v_col["tall3d"].shape == (3, 50)
    assert state.v_row["wide3d"].shape == (2, 36) and state.v_col["wide3d"].shape == (40, 2)
    assert state.v["thin"].shape == (16, 100) and state.v["scalar"].shape == ()
    for tree in (state.v_row, state.v_col, state.v):
        assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(tree))
    assert all(a.dtype == jnp.bfloat16 and a.shape == params[k].shape
               for k, a in state.mu.items())
    # bf16 parameters still get fp32 statistics.
    state16 = adafactor_bv().init(jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16),
                                                         params))
    assert state16.v["thin"].dtype == jnp.float32 and state16.v_row["matrix"].dtype == jnp.float32


def test_adam_hp_matches_numpy_reference_with_bf16_first_moment():
    grads = _grads_sequence()
    ours, state = _run(adam_hp(), grads, _random_tree(0))
    ref, m, v = _np_adam(grads, store_m=_bf16)
    _assert_close_trees(ours, ref, rtol=1e-4, leaf_scale_atol=2 ** -8)
    for name in SHAPES:
        assert state.mu[name].dtype == jnp.bfloat16 and state.nu[name].dtype == jnp.float32
        np.testing.assert_allclose(state.nu[name], v[name], rtol=1e-5)


def test_adam_hp_with_fp32_moment_equals_optax_adam():
    grads, params = _grads_sequence(), _random_tree(0)
    ours, _ = _run(adam_hp(momentum_dtype=jnp.float32), grads, params)
    ref, _ = _run(optax.scale_by_adam(), grads, params)
    _assert_close_trees(ours, ref, rtol=1e-5)
    ref_np, _, _ = _np_adam(grads)
    _assert_close_trees(ours, ref_np, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ the whole chain

def _vit_params():
    cfg = vit_config("Pico/4", image_size=28, num_classes=10, pool_type="map")
    return ViT(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]


def test_weight_decay_masks_on_a_real_vit():
    rates = weight_decay_tree(_vit_params(), paper_recipe(100_000)["weight_decay"])
    by_path = {param_path(p): r for p, r in jax.tree_util.tree_flatten_with_path(rates)[0]}
    assert by_path["head/kernel"] == 3.0
    assert by_path["head/bias"] == 0.0
    assert by_path["embedding/kernel"] == 0.03
    assert by_path["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"] == 0.03
    assert by_path["Transformer/encoderblock_2/MultiHeadDotProductAttention_0/query/kernel"] \
        == 0.03
    assert by_path["MAPHead_0/MultiHeadDotProductAttention_0/out/kernel"] == 0.03
    for no_decay in ("pos_embedding", "MAPHead_0/probe", "Transformer/encoder_norm/scale",
                     "Transformer/encoderblock_1/LayerNorm_0/scale", "MAPHead_0/LayerNorm_0/scale",
                     "Transformer/encoderblock_1/MlpBlock_0/Dense_1/bias", "embedding/bias"):
        assert by_path[no_decay] == 0.0, no_decay
    kernels = [p for p in by_path if p.endswith("/kernel")]
    assert all(by_path[p] > 0 for p in kernels)
    assert sum(r == 0.0 for r in by_path.values()) == len(by_path) - len(kernels)


def test_chain_step_is_clip_then_direction_then_decoupled_decay_times_lr():
    params = {"head": {"kernel": jnp.full((4, 3), 2.0), "bias": jnp.ones((3,))},
              "body": {"kernel": jnp.full((3, 3), -1.0)}}
    grads = jax.tree_util.tree_map(lambda p: jnp.full(p.shape, 10.0), params)
    config = dict(optimizer="sgd", optimizer_kwargs=dict(momentum=0.0), lr=0.5,
                  total_steps=10, grad_clip_norm=1.0,
                  schedule=dict(kind="constant"),
                  weight_decay=[("^head/", 3.0), (".*", 0.03)])
    tx = make_optimizer(config)
    updates, _ = tx.update(grads, tx.init(params), params)
    norm = np.sqrt(sum(np.sum(np.asarray(g) ** 2) for g in jax.tree_util.tree_leaves(grads)))
    clipped = 10.0 / norm  # every gradient entry after global-norm clipping to 1.0
    np.testing.assert_allclose(updates["head"]["kernel"], -0.5 * (clipped + 3.0 * 2.0), rtol=1e-6)
    np.testing.assert_allclose(updates["head"]["bias"], -0.5 * clipped, rtol=1e-6)  # no decay
    np.testing.assert_allclose(updates["body"]["kernel"], -0.5 * (clipped + 0.03 * -1.0),
                               rtol=1e-6)


def test_paper_recipe_builds_and_trains_a_vit_step():
    config = paper_recipe(total_steps=100_000)
    assert config["lr"] == 8e-4 and config["grad_clip_norm"] == 1.0
    params = _vit_params()
    tx = make_optimizer(config)
    state = tx.init(params)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, state = jax.jit(tx.update)(grads, state, params)
    assert all(np.all(np.isfinite(u)) for u in jax.tree_util.tree_leaves(updates))
    # Step 0 of a 10k warmup has lr 0: nothing moves.
    assert all(np.all(np.asarray(u) == 0) for u in jax.tree_util.tree_leaves(updates))
    updates, _ = jax.jit(tx.update)(grads, state, params)
    assert any(np.any(np.asarray(u) != 0) for u in jax.tree_util.tree_leaves(updates))


@pytest.mark.parametrize("bad, field", [
    (dict(optimizer="lamb"), "optimizer"),
    (dict(learning_rate=1.0), "unknown key"),
    (dict(lr=-1.0), "lr"),
    (dict(weight_decay=[("([", 0.1)]), "weight_decay"),
    (dict(weight_decay=[("head", -1.0)]), "weight_decay"),
    (dict(no_decay=["(("]), "no_decay"),
    (dict(grad_clip_norm=-1.0), "grad_clip_norm"),
    (dict(optimizer_kwargs=dict(beta9=0.1)), "optimizer_kwargs"),
    (dict(schedule=dict(kind="step")), "schedule.kind"),
])
def test_bad_optimizer_configs_name_the_field(bad, field):
    config = {**paper_recipe(100_000), **bad}
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        make_optimizer(config)


def test_config_dict_is_accepted():
    from ml_collections import ConfigDict
    tx = make_optimizer(ConfigDict(paper_recipe(100_000)))
    assert isinstance(tx, optax.GradientTransformation)


@pytest.mark.parametrize("name", ["adafactor_bv", "adam_hp", "adam", "adafactor", "sgd"])
def test_every_optimizer_descends_through_the_chain(name):
    """One step of the full chain lowers a quadratic loss (catches a flipped sign)."""
    target = {"w": jnp.linspace(-1.0, 1.0, 64 * 48).reshape(64, 48), "b": jnp.ones((48,))}
    params = jax.tree_util.tree_map(jnp.zeros_like, target)
    loss = lambda p: sum(jnp.sum((p[k] - target[k]) ** 2) for k in p)  # noqa: E731
    tx = make_optimizer(dict(optimizer=name, lr=1e-2, total_steps=10,
                             schedule=dict(kind="constant")))
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert loss(params) < loss(jax.tree_util.tree_map(jnp.zeros_like, target))


@pytest.mark.parametrize("name, schedule", [
    ("adam", dict(kind="cosine", warmup_steps=2)),
    ("adafactor_bv", dict(kind="rsqrt", warmup_steps=2, timescale=3, cooldown_steps=2)),
    ("adam_hp", dict(kind="linear", warmup_steps=1)),
])
def test_sweepable_chain_equals_make_optimizer_step_for_step(name, schedule):
    """lr and weight decay given as update() inputs reproduce the chain with them built in."""
    from vitlib.optim.chain import make_sweepable_optimizer
    config = dict(optimizer=name, lr=3e-3, total_steps=STEPS, schedule=schedule,
                  grad_clip_norm=1.0, weight_decay=[("^matrix", 3.0), (".*", 0.03)],
                  no_decay=["vector"])
    reference, sweepable = make_optimizer(config), make_sweepable_optimizer(config)
    params_ref = params_in = jax.tree_util.tree_map(jnp.asarray, _random_tree(0))
    state_ref, state_in = reference.init(params_ref), sweepable.tx.init(params_in)
    lrs = sweepable.lr_table(STEPS)
    rates = sweepable.weight_decay_rates(params_in)
    assert rates["matrix"] == np.float32(3.0) and rates["vector"] == 0.0
    update_in = jax.jit(sweepable.tx.update)
    for step, grads in enumerate(_grads_sequence()):
        updates, state_ref = reference.update(grads, state_ref, params_ref)
        params_ref = optax.apply_updates(params_ref, updates)
        updates, state_in = update_in(grads, state_in, params_in, lr=lrs[step],
                                      weight_decay=rates)
        params_in = optax.apply_updates(params_in, updates)
        for k in SHAPES:
            np.testing.assert_allclose(params_in[k], params_ref[k], rtol=1e-6, atol=1e-7)
