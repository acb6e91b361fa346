"""The config and step pieces of the JPEG path: later-added keys leave older runs' identity
alone, records read back into whole configs, multi-hot labels in the losses and the eval step,
the head's initial bias, checkpoints written before the data-iterator item, and the errors of
the new fields."""
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vitlib.configs import LATER_KEYS, apply_overrides, from_record, load_config
from vitlib.models import ViT, vit_config
from vitlib.train.build import check_config
from vitlib.train.checkpoints import Checkpointer
from vitlib.train.steps import loss_value, make_eval_step
from vitlib.train.workdir import plain


def _get(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def test_later_keys_hold_the_base_configs_defaults_and_leave_the_identity_at_them():
    full = load_config("base").to_dict()
    for key, default in LATER_KEYS.items():
        value = _get(full, key)
        value = value.to_dict() if hasattr(value, "to_dict") else value
        assert (list(value) if isinstance(value, tuple) else value) == default, key
    identity = plain(load_config("quickstart"))
    assert "input" not in identity and "head_bias_init" not in identity["model"]
    assert not {"suite", "l2", "every"} & set(identity["fewshot"])
    # a key away from its default is part of the run
    changed = plain(apply_overrides(load_config("quickstart"), ["input.workers=2",
                                                                  "fewshot.l2='fixed'"]))
    assert changed["input"]["workers"] == 2 and changed["fewshot"]["l2"] == "fixed"


def test_a_record_reads_back_into_the_whole_config():
    config = apply_overrides(load_config("quickstart"), ["model.head_bias_init=-6.9",
                                                         "optim.lr=0.01"])
    back = from_record(plain(config))
    assert plain(back) == plain(config)
    assert back.input.pipeline == "memory" and back.model.head_bias_init == -6.9


def test_multi_hot_losses_match_their_formulas():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 7)).astype(np.float32)
    targets = (rng.random((5, 7)) < 0.3).astype(np.float32)
    targets[0] = 0.0  # an example without labels
    sig = np.log1p(np.exp(-np.abs(logits))) + np.maximum(logits, 0) - logits * targets
    assert float(loss_value("sigmoid", jnp.asarray(logits), jnp.asarray(targets))) == \
        pytest.approx(sig.sum(-1).mean(), rel=1e-5)
    spread = targets / np.maximum(targets.sum(-1, keepdims=True), 1.0)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert float(loss_value("softmax", jnp.asarray(logits), jnp.asarray(targets))) == \
        pytest.approx(-(spread * log_softmax).sum(-1).mean(), rel=1e-5)
    # one-hot rows are the same loss as their class ids
    ids = rng.integers(0, 7, size=5)
    for kind in ("softmax", "sigmoid"):
        assert float(loss_value(kind, jnp.asarray(logits), jnp.asarray(np.eye(7)[ids]))) == \
            pytest.approx(float(loss_value(kind, jnp.asarray(logits), jnp.asarray(ids))),
                          rel=1e-6)


def test_head_bias_init_and_precision_at_one_on_multi_hot_labels():
    model = ViT(vit_config("Pico/7", image_size=28, num_classes=6, head_bias_init=-6.9))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]
    np.testing.assert_array_equal(params["head"]["bias"], np.full(6, -6.9, np.float32))
    params = jax.tree_util.tree_map(lambda x: x, params)
    params["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(1),
                                                 params["head"]["kernel"].shape)
    images = jax.random.normal(jax.random.PRNGKey(2), (8, 28, 28, 1))
    logits, _ = model.apply({"params": params}, images)
    top = np.argmax(np.asarray(logits), -1)
    labels = np.zeros((8, 6), np.float32)
    labels[np.arange(8), top] = 1.0  # rows 0..3 hold their top class, 4..7 only another
    labels[4:] = 0.0
    labels[np.arange(4, 8), (top[4:] + 1) % 6] = 1.0
    mask = np.array([1, 1, 1, 0, 1, 1, 1, 1], bool)
    correct = make_eval_step(model)(params, {"image": images, "label": jnp.asarray(labels),
                                             "mask": jnp.asarray(mask)})
    assert int(correct) == 3


def test_a_checkpoint_without_the_data_iterator_item_restores(tmp_path):
    state = {"w": jnp.arange(4.0)}
    old = ocp.CheckpointManager(tmp_path.absolute(), options=ocp.CheckpointManagerOptions(
        create=True, enable_async_checkpointing=False))
    old.save(3, args=ocp.args.StandardSave(state), force=True)  # the single-item layout
    old.wait_until_finished()
    old.close()
    checkpointer = Checkpointer(tmp_path)
    abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
    np.testing.assert_array_equal(checkpointer.restore(3, abstract)["w"], state["w"])
    assert checkpointer.restore_data_state(3) is None
    checkpointer.save(5, state, {"first_step": 0, "grain": {"next_index": 5}})
    assert checkpointer.restore_data_state(5) == {"first_step": 0, "grain": {"next_index": 5}}
    checkpointer.close()


@pytest.mark.parametrize("override, message", [
    ("input.pipeline='tf'", "input.pipeline: 'tf' is not allowed"),
    ("input.workers=-1", "input.workers: -1 is not allowed"),
    ("input.min_area=0.0", "input.min_area: 0.0 is not allowed"),
    ("input.crop='random'", "input.crop: 'random' is not allowed"),
    ("input.decoder='libjpeg'", "input.decoder: 'libjpeg' is not allowed"),
    ("input.bad_images='ignore'", "input.bad_images: 'ignore' is not allowed"),
    ("fewshot.l2='cv'", "fewshot.l2: 'cv' is not allowed"),
    ("fewshot.every=-5", "fewshot.every: -5 is not allowed"),
    ("fewshot.cache_gib=-1.0", "fewshot.cache_gib: -1.0 is not allowed"),
    ("fewshot.suite=('a:b',)", "fewshot.suite: entry 'a:b'"),
    ("augment.flip=True", "with 'grain' use input.crop and input.flip"),
])
def test_the_new_fields_are_checked_up_front_naming_field_and_value(override, message):
    grain = ["input.pipeline='grain'", "image_size=28"]  # Nano/7 tiles 28 px
    sets = grain + [override] if not override.startswith("input.pipeline") else [override]
    config = apply_overrides(load_config("quickstart"), sets)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_config(config)


def test_grain_needs_an_image_size():
    config = apply_overrides(load_config("quickstart"), ["input.pipeline='grain'"])
    with pytest.raises(ValueError, match="image_size: 0 is not allowed with input.pipeline"):
        check_config(config)


def test_the_paper_b16_config_is_the_papers_recipe_and_passes_the_checks():
    from vitlib.optim.chain import paper_recipe

    config = load_config("paper_b16")
    check_config(config)
    recipe = paper_recipe(config.total_steps, cooldown_steps=10_000)
    optim = config.optim.to_dict()
    for key in ("optimizer", "lr", "grad_clip_norm"):
        assert optim[key] == recipe[key], key
    assert [tuple(rule) for rule in optim["weight_decay"]] == recipe["weight_decay"]
    assert {k: optim["schedule"][k] for k in recipe["schedule"]} == recipe["schedule"]
    assert {k: optim["optimizer_kwargs"][k] for k in recipe["optimizer_kwargs"]} == \
        recipe["optimizer_kwargs"]
    assert (config.model.variant, config.model.pool_type, config.loss, config.batch_size,
            config.image_size, config.input.crop) == ("B/16", "map", "sigmoid", 4096, 224,
                                                      "inception")
