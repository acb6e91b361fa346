"""Checkpoint interop against an independent implementation: timm's ``VisionTransformer``.

timm models with random weights (no download) for the class-token, GAP and MAP heads are loaded
into vitlib and must give timm's logits and pre-logits on the same images, in float32, within
``TOL`` (measured: at most ~1e-6 on logits of size ~1). timm's own big_vision ``.npz`` reader
(``_load_weights``) checks vitlib's ``.npz`` writer the same way. Round trips vitlib -> npz ->
vitlib and vitlib -> timm -> vitlib are bit-exact. timm is built with ``act_layer='gelu_tanh'``
and ``fc_norm=False``: vitlib follows big_vision (tanh GELU, LayerNorm before GAP).

torch and timm are test dependencies (``make test`` installs them; see docs/checkpoints.md).
``import timm`` works in the ``.venv`` that ``make install`` builds (``vitlib.torchvision_cpu``:
PyPI's torchvision is a CUDA build whose C ops cannot load against the CPU torch wheel); the
tests install the same import hook themselves, so that they run in any environment.
"""
import subprocess
import sys

import jax
import numpy as np
import pytest


def import_timm():
    from vitlib import torchvision_cpu

    torchvision_cpu.install()
    import timm
    return timm


timm = import_timm()
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from timm.layers import resample_abs_pos_embed  # noqa: E402
from timm.models.vision_transformer import VisionTransformer, _load_weights  # noqa: E402

from vitlib.models import ViT, convert, interop, vit_config  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)  # float32, vitlib (XLA) vs timm (PyTorch) on CPU
SHAPE = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0,
             num_classes=7)
HEADS = {  # vitlib pool type -> timm arguments
    "tok": dict(global_pool="token", class_token=True),
    "gap": dict(global_pool="avg", class_token=False),
    "map": dict(global_pool="map", class_token=False),
}
IMAGES = np.random.RandomState(0).randn(4, 32, 32, 3).astype(np.float32)
torch.set_num_threads(1)


def timm_vit(pool="tok", seed=0, **kw):
    """A timm ViT computing vitlib's function, every weight random (timm zero/1e-6-initialises
    some, which would hide mistakes)."""
    torch.manual_seed(seed)
    args = {**SHAPE, **HEADS[pool], "fc_norm": False, "act_layer": "gelu_tanh", **kw}
    model = VisionTransformer(**args).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def timm_forward(model, images=IMAGES):
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        return model.head(pre).numpy(), pre.numpy()


def vitlib_forward(config, params, images=IMAGES):
    logits, aux = ViT(config).apply({"params": params}, images)
    return np.asarray(logits), np.asarray(aux["pre_logits"])


def state_of(model):
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def random_vitlib(pool="tok", seed=1, **kw):
    config = vit_config(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=8,
                        image_size=32, num_classes=5, pool_type=pool, **kw)
    params = ViT(config).init(jax.random.PRNGKey(0), IMAGES[:1])["params"]
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    params = jax.tree_util.tree_unflatten(
        tree, [(0.1 * jax.random.normal(k, a.shape)).astype(a.dtype)
               for k, a in zip(keys, leaves)])
    return config, params


def assert_trees_equal(a, b):
    fa, fb = interop.common.flatten(a), interop.common.flatten(b)
    assert sorted(fa) == sorted(fb)
    for key in fa:
        assert np.asarray(fa[key]).dtype == np.asarray(fb[key]).dtype, key
        np.testing.assert_array_equal(np.asarray(fa[key]), np.asarray(fb[key]), err_msg=key)


# ---- timm -> vitlib: the same function -----------------------------------------------------

@pytest.mark.parametrize("pool,no_embed_class", [("tok", False), ("tok", True), ("gap", True),
                                                 ("map", True)])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_checkpoint_gives_timm_logits(tmp_path, pool, no_embed_class, suffix):
    model = timm_vit(pool, no_embed_class=no_embed_class)
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file(state_of(model), str(path))
    else:
        torch.save(state_of(model), path)
    config, params = interop.load(path, num_heads=4)
    assert (config.pool_type, config.width, config.depth, config.mlp_dim, config.patch_size,
            config.image_size, config.num_classes) == (pool, 64, 2, 128, 8, 32, 7)
    logits, pre = timm_forward(model)
    got_logits, got_pre = vitlib_forward(config, params)
    np.testing.assert_allclose(got_logits, logits, **TOL)
    np.testing.assert_allclose(got_pre, pre, **TOL)


def test_exact_gelu_timm_model_differs_beyond_the_tolerance(tmp_path):
    """The GELU form is not in the weights: a timm model with exact GELU loads, but vitlib (tanh
    GELU, like big_vision) computes a measurably different function."""
    model = timm_vit("gap", act_layer="gelu")
    save_file(state_of(model), str(tmp_path / "m.safetensors"))
    config, params = interop.load(tmp_path / "m.safetensors", num_heads=4)
    diff = np.abs(vitlib_forward(config, params)[0] - timm_forward(model)[0]).max()
    assert diff > 3 * TOL["atol"]  # measured 1.4e-4


def test_named_shape_gives_heads_and_variant(tmp_path):
    model = timm_vit("map", embed_dim=32, num_heads=2, mlp_ratio=4.0)  # Femto: 32, 2, 128, 2
    save_file(state_of(model), str(tmp_path / "femto.safetensors"))
    config, params = interop.load(tmp_path / "femto.safetensors")
    assert config.variant == "Femto/8" and config.num_heads == 2
    np.testing.assert_allclose(vitlib_forward(config, params)[0], timm_forward(model)[0], **TOL)


def test_position_embedding_is_resampled_to_a_new_resolution(tmp_path):
    model = timm_vit("gap", no_embed_class=True)
    save_file(state_of(model), str(tmp_path / "m.safetensors"))
    config, params = interop.load(tmp_path / "m.safetensors", num_heads=4, image_size=48)
    assert config.image_size == 48 and params["pos_embedding"].shape == (1, 36, 64)
    # timm's own resampler, bilinear without antialiasing (this is an upsampling: the same rule)
    want = resample_abs_pos_embed(model.pos_embed.detach(), new_size=(6, 6), num_prefix_tokens=0,
                                  interpolation="bilinear", antialias=False).numpy()
    np.testing.assert_allclose(params["pos_embedding"], want, rtol=1e-5, atol=1e-6)


# ---- big_vision / vision_transformer .npz --------------------------------------------------

@pytest.mark.parametrize("pool", ["tok", "gap", "map"])
@pytest.mark.parametrize("scan,dtype", [(False, None), (True, None), (False, "bfloat16")])
def test_npz_export_is_read_by_timms_big_vision_loader(tmp_path, pool, scan, dtype):
    config, params = random_vitlib(pool)
    path = interop.save(params, config, tmp_path / "m.npz", scan=scan, dtype=dtype)
    with np.load(path) as archive:
        keys = set(archive.files)
        if dtype == "bfloat16":  # as big_vision stores bfloat16: 2-byte void views
            assert archive["embedding/kernel"].dtype == np.dtype("V2")
    assert ("Transformer/encoderblock/LayerNorm_0/scale" in keys) == scan
    model = VisionTransformer(**interop.timm_kwargs(config)).eval()
    _load_weights(model, str(path), load_bfloat16=dtype == "bfloat16")
    if dtype == "bfloat16":
        params = jax.tree_util.tree_map(
            lambda a: np.asarray(a).astype("bfloat16").astype(np.float32), params)
    np.testing.assert_allclose(vitlib_forward(config, params)[0], timm_forward(model)[0], **TOL)


def write_vision_transformer_npz(model, path, representation=None):
    """The original google-research/vision_transformer layout, written from a timm model with
    ``no_embed_class=False`` (the class slot in the position embedding) by its own mapping."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    d, h = model.embed_dim, model.blocks[0].attn.num_heads
    out = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
           "embedding/bias": sd["patch_embed.proj.bias"], "cls": sd["cls_token"],
           "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
           "Transformer/encoder_norm/scale": sd["norm.weight"],
           "Transformer/encoder_norm/bias": sd["norm.bias"]}
    for i in range(len(model.blocks)):
        b, t = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        for ln, name in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            out[f"{t}{ln}/scale"], out[f"{t}{ln}/bias"] = sd[b + name + ".weight"], \
                sd[b + name + ".bias"]
        qkv_w, qkv_b = sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]
        for j, n in enumerate(("query", "key", "value")):
            out[f"{t}MultiHeadDotProductAttention_1/{n}/kernel"] = \
                qkv_w[j * d:(j + 1) * d].T.reshape(d, h, d // h)
            out[f"{t}MultiHeadDotProductAttention_1/{n}/bias"] = \
                qkv_b[j * d:(j + 1) * d].reshape(h, d // h)
        out[f"{t}MultiHeadDotProductAttention_1/out/kernel"] = \
            sd[b + "attn.proj.weight"].T.reshape(h, d // h, d)
        out[f"{t}MultiHeadDotProductAttention_1/out/bias"] = sd[b + "attn.proj.bias"]
        for r in range(2):
            out[f"{t}MlpBlock_3/Dense_{r}/kernel"] = sd[f"{b}mlp.fc{r + 1}.weight"].T
            out[f"{t}MlpBlock_3/Dense_{r}/bias"] = sd[f"{b}mlp.fc{r + 1}.bias"]
    if representation is not None:
        out["pre_logits/kernel"], out["pre_logits/bias"] = representation
    else:
        out["head/kernel"], out["head/bias"] = sd["head.weight"].T, sd["head.bias"]
    np.savez(path, **out)


def test_vision_transformer_npz_gives_timm_logits(tmp_path):
    model = timm_vit("tok", no_embed_class=False)
    path = tmp_path / "vit.npz"
    write_vision_transformer_npz(model, path)
    reread = VisionTransformer(**{**SHAPE, **HEADS["tok"], "fc_norm": False,
                                  "act_layer": "gelu_tanh"}).eval()
    _load_weights(reread, str(path))  # the test's writer agrees with timm's reader
    for key, value in state_of(model).items():
        np.testing.assert_array_equal(reread.state_dict()[key].numpy(), value.numpy(), key)
    config, params = interop.load(path)
    assert config.pool_type == "tok" and config.representation_size is None
    logits, pre = timm_forward(model)
    got_logits, got_pre = vitlib_forward(config, params)
    np.testing.assert_allclose(got_logits, logits, **TOL)
    np.testing.assert_allclose(got_pre, pre, **TOL)


def test_vision_transformer_pre_logits_is_dense_tanh(tmp_path):
    model = timm_vit("tok", num_classes=0)
    rng = np.random.RandomState(2)
    kernel, bias = rng.randn(64, 48).astype(np.float32) * 0.1, rng.randn(48).astype(np.float32)
    write_vision_transformer_npz(model, tmp_path / "vit.npz", representation=(kernel, bias))
    config, params = interop.load(tmp_path / "vit.npz")
    assert config.representation_size == 48 and config.num_classes == 0
    _, token = timm_forward(model)  # the class token after the final norm
    np.testing.assert_allclose(vitlib_forward(config, params)[1], np.tanh(token @ kernel + bias),
                               **TOL)


def test_big_vision_train_state_prefix_and_inlined_map_probe(tmp_path):
    config, params = random_vitlib("map")
    flat = interop.to_npz_tree(params, scan=True, prefix="params/")
    flat = {k.replace("params/MAPHead_0/", "params/"): v for k, v in flat.items()}  # inlined
    flat["opt_state/mu/head/kernel"] = np.zeros((32, 5), np.float32)  # optimizer state beside
    np.savez(tmp_path / "state.npz", **flat)
    loaded_config, loaded = interop.load(tmp_path / "state.npz")
    assert loaded_config.pool_type == "map"
    assert_trees_equal(loaded, jax.tree_util.tree_map(np.asarray, params))


def test_bfloat16_npz_from_numpy_loads_as_bfloat16(tmp_path):
    import ml_dtypes
    config, params = random_vitlib("gap")
    flat = {k: np.asarray(v).astype(ml_dtypes.bfloat16)
            for k, v in interop.common.flatten(jax.tree_util.tree_map(np.asarray,
                                                                      params)).items()}
    np.savez(tmp_path / "bf16.npz", **flat)  # numpy itself stores bfloat16 as '|V2'
    _, loaded = interop.load(tmp_path / "bf16.npz", param_dtype="bfloat16")
    for key, value in interop.common.flatten(loaded).items():
        assert value.dtype == ml_dtypes.bfloat16
        np.testing.assert_array_equal(value.view(np.uint16), flat[key].view(np.uint16), key)


# ---- round trips: exact --------------------------------------------------------------------

@pytest.mark.parametrize("pool,kw", [("tok", {}), ("gap", {}), ("map", {}),
                                     ("tok", {"representation_size": 16}),
                                     ("gap", {"posemb": "sincos2d"}), ("map", {"scan": True})])
def test_npz_round_trip_is_exact(tmp_path, pool, kw):
    config, params = random_vitlib(pool, **kw)
    for scan in (False, True):
        interop.save(params, config, tmp_path / f"m{scan}.npz", scan=scan)
        # a sincos2d checkpoint does not store its resolution: name it
        size = config.image_size if config.posemb == "sincos2d" else None
        loaded_config, loaded = interop.load(tmp_path / f"m{scan}.npz", scan=config.scan,
                                             image_size=size)
        assert loaded_config == config.replace(in_channels=3)  # read off the kernel
        assert_trees_equal(loaded, jax.tree_util.tree_map(np.asarray, params))


@pytest.mark.parametrize("pool,kw", [("tok", {}), ("gap", {}), ("map", {}),
                                     ("map", {"scan": True})])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_round_trip_is_exact(tmp_path, pool, kw, suffix):
    config, params = random_vitlib(pool, **kw)
    interop.save(params, config, tmp_path / f"m{suffix}")
    loaded_config, loaded = interop.load(tmp_path / f"m{suffix}", num_heads=2, scan=config.scan)
    assert loaded_config == config.replace(in_channels=3)
    assert_trees_equal(loaded, jax.tree_util.tree_map(np.asarray, params))


def test_timm_export_of_sincos_model_computes_the_same_function():
    config, params = random_vitlib("gap", posemb="sincos2d")
    model = VisionTransformer(**interop.timm_kwargs(config)).eval()
    model.load_state_dict({k: torch.tensor(v) for k, v in
                           interop.to_timm(params, config).items()})
    np.testing.assert_allclose(vitlib_forward(config, params)[0], timm_forward(model)[0], **TOL)


def test_our_safetensors_reader_and_writer_agree_with_the_safetensors_package(tmp_path):
    from safetensors.numpy import load_file
    state = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float16)}
    interop.write_safetensors(state, tmp_path / "x.safetensors")
    for key, value in load_file(str(tmp_path / "x.safetensors")).items():
        np.testing.assert_array_equal(value, state[key])
    save_file({"c": torch.arange(4, dtype=torch.bfloat16)}, str(tmp_path / "y.safetensors"))
    got = interop.read_safetensors(tmp_path / "y.safetensors")["c"]
    np.testing.assert_array_equal(got.astype(np.float32), np.arange(4, dtype=np.float32))


# ---- bad input: errors name the key, the shape found, the shape expected -------------------

def test_missing_key_is_named(tmp_path):
    state = state_of(timm_vit("gap", no_embed_class=True))
    del state["blocks.1.mlp.fc2.bias"]
    save_file(state, str(tmp_path / "m.safetensors"))
    with pytest.raises(ValueError, match=r"blocks\.1\.mlp\.fc2\.bias: missing.*\(64,\)"):
        interop.load(tmp_path / "m.safetensors", num_heads=4)
    config, params = random_vitlib("gap")
    flat = interop.to_npz_tree(params)
    del flat["Transformer/encoderblock_1/LayerNorm_1/scale"]
    np.savez(tmp_path / "m.npz", **flat)
    with pytest.raises(ValueError, match=r"Transformer/encoderblock_1/LayerNorm_1/scale: "
                                         r"missing \(expected shape \(32,\)\)"):
        interop.load(tmp_path / "m.npz")


def test_wrong_shape_against_the_named_variant(tmp_path):
    config, params = random_vitlib("gap")  # width 32 depth 2 mlp 64 heads 2: not Femto's mlp
    interop.save(params, config, tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"MlpBlock_0/Dense_0/kernel: shape \(32, 64\) found, "
                                         r"\(32, 128\) expected"):
        interop.load(tmp_path / "m.npz", "Femto/8")
    with pytest.raises(ValueError, match=r"embedding/kernel: shape \(8, 8, 3, 32\) found, "
                                         r"\(4, 4, 3, 32\) expected"):
        interop.load(tmp_path / "m.npz", patch_size=4)
    with pytest.raises(ValueError, match=r"head/kernel: shape \(32, 5\) found, \(32, 10\)"):
        interop.load(tmp_path / "m.npz", num_classes=10)


def test_pool_type_that_does_not_match_is_an_error(tmp_path):
    config, params = random_vitlib("tok")
    interop.save(params, config, tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"cls: unexpected \(found shape \(1, 1, 32\)"):
        interop.load(tmp_path / "m.npz", pool_type="gap")


def test_timm_features_vitlib_lacks_are_refused(tmp_path):
    save_file(state_of(timm_vit("gap", fc_norm=True)), str(tmp_path / "fc.safetensors"))
    with pytest.raises(ValueError, match=r"fc_norm\.(weight|bias): a LayerNorm after pooling"):
        interop.load(tmp_path / "fc.safetensors", num_heads=4)
    save_file(state_of(timm_vit("tok", init_values=1e-5)), str(tmp_path / "ls.safetensors"))
    with pytest.raises(ValueError, match=r"blocks\.0\.ls1\.gamma: unexpected key"):
        interop.load(tmp_path / "ls.safetensors", num_heads=4)
    config, params = random_vitlib("tok", representation_size=8)
    with pytest.raises(ValueError, match="pre_logits: representation_size=8"):
        interop.save(params, config, tmp_path / "rep.safetensors")


def test_unknown_layout_and_unreadable_files(tmp_path):
    np.savez(tmp_path / "other.npz", **{"conv1/weight": np.zeros((3, 3))})
    with pytest.raises(ValueError, match=r"layout: not a ViT checkpoint.*'conv1'"):
        interop.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        interop.load(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match=r"format: cannot tell.*'\.ckpt'"):
        interop.load(tmp_path / "m.ckpt")
    with pytest.raises(ValueError, match="does not exist"):
        interop.load(tmp_path / "absent.npz")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"patch_embed\.proj\.weight: missing"):
        interop.load(tmp_path / "bad.safetensors")


def test_unnamed_timm_shape_needs_num_heads(tmp_path):
    save_file(state_of(timm_vit("gap", no_embed_class=True)), str(tmp_path / "m.safetensors"))
    with pytest.raises(ValueError, match="num_heads: a timm state dict does not store"):
        interop.load(tmp_path / "m.safetensors")


# ---- the command line ----------------------------------------------------------------------

def test_cli_converts_npz_to_timm_and_back(tmp_path, capsys):
    config, params = random_vitlib("map")
    interop.save(params, config, tmp_path / "a.npz")
    assert convert.main(["--from", str(tmp_path / "a.npz"),
                         "--to", str(tmp_path / "b.safetensors")]) == 0
    assert '"timm_kwargs"' in capsys.readouterr().out
    assert convert.main(["--from", str(tmp_path / "b.safetensors"), "--to",
                         str(tmp_path / "c.npz"), "--num-heads", "2", "--image-size", "48",
                         "--dtype", "bfloat16"]) == 0
    loaded_config, loaded = interop.load(tmp_path / "c.npz")
    assert loaded_config.image_size == 48 and loaded["pos_embedding"].shape == (1, 36, 32)


@pytest.mark.parametrize("args,message", [
    (["--to", "x.npz"], "--from"),
    (["--from", "MISSING.npz", "--to", "x.npz"], "does not exist"),
    (["--from", "A.npz", "--to", "x.ckpt"], "cannot tell the format"),
    (["--from", "A.npz", "--to", "x.npz", "--variant", "Q/16"], "unknown name 'Q'"),
    (["--from", "A.npz", "--to", "x.npz", "--image-size", "0"], "positive integer"),
    (["--from", "A.npz", "--to", "x.safetensors", "--scan"], "only for an npz output"),
    (["--from", "A.npz", "--to", "A.npz"], "must differ"),
])
def test_cli_rejects_bad_arguments(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    config, params = random_vitlib("gap")
    interop.save(params, config, tmp_path / "A.npz")
    with pytest.raises(SystemExit) as exit_info:
        convert.main(args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_cli_reports_a_mismatch_and_writes_nothing(tmp_path, capsys):
    config, params = random_vitlib("gap")
    interop.save(params, config, tmp_path / "a.npz")
    assert convert.main(["--from", str(tmp_path / "a.npz"), "--to", str(tmp_path / "b.npz"),
                         "--pool-type", "map"]) == 1
    assert "MAPHead_0/probe: missing" in capsys.readouterr().err
    assert not (tmp_path / "b.npz").exists()
