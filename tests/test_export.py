"""Exporting a trained run: ``import timm`` in the project's venv, the docs' recipe on a trained
grey-scale run, ``convert --from WORKDIR``, and a timm module on exact GELU (a warning)."""
import subprocess
import sys

import numpy as np
import pytest

from vitlib import torchvision_cpu
from vitlib.models import ViT, convert, interop

torchvision_cpu.install()
torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from safetensors.torch import load_file  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)


def test_plain_import_timm_works_in_this_python():
    """As a user gets it from ``make install``: no helper imported first."""
    out = subprocess.run([sys.executable, "-c", "import timm, torchvision; print(timm.__version__)"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory):
    """A tiny trained run on digits (28x28, one channel), 3 steps, the last two checkpoints kept (2, 3)."""
    from vitlib.study.experiments import make_config
    from vitlib.train.loop import fit

    workdir = tmp_path_factory.mktemp("grey_run")
    config = make_config("quickstart", {
        "dataset": "digits", "model.variant": "Pico/7", "batch_size": 16, "total_steps": 3,
        "train_split": "train", "eval_splits": ("minival",), "fewshot.dataset": "",
        "checkpoint_every": 1, "log_every": 1,
        "optim.schedule.warmup_steps": 1})
    fit(config, workdir, progress=False)
    return workdir


def _images(channels):
    return np.random.RandomState(0).uniform(-1, 1, (2, 28, 28, channels)).astype(np.float32)


def _timm_logits(model, images):
    with torch.no_grad():
        return model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()


def test_docs_recipe_exports_a_trained_grey_scale_run(grey_run, tmp_path):
    config, params = interop.load_workdir(grey_run)
    assert config.in_channels == 1 and config.variant == "Pico/7"
    interop.save(params, config, tmp_path / "run.safetensors")
    model = VisionTransformer(**interop.timm_kwargs(config))  # the docs' recipe, verbatim
    model.load_state_dict(load_file(str(tmp_path / "run.safetensors")))
    model.eval()
    images = _images(1)
    want = np.asarray(ViT(config).apply({"params": params}, images)[0])
    np.testing.assert_allclose(_timm_logits(model, images), want, **TOL)


def test_convert_reads_a_workdir_at_its_last_or_a_named_step(grey_run, tmp_path, capsys):
    assert convert.main(["--from", str(grey_run), "--to", str(tmp_path / "q.safetensors")]) == 0
    report = capsys.readouterr().out
    assert '"from_step": 3' in report and '"in_chans": 1' in report
    _, last = interop.load(tmp_path / "q.safetensors", num_heads=2)
    assert convert.main(["--from", str(grey_run), "--step", "2",
                         "--to", str(tmp_path / "q2.npz")]) == 0
    _, second = interop.load(tmp_path / "q2.npz")
    assert not np.array_equal(last["head"]["kernel"], second["head"]["kernel"])


def test_convert_names_a_missing_step(grey_run, tmp_path, capsys):
    assert convert.main(["--from", str(grey_run), "--step", "7",
                         "--to", str(tmp_path / "x.npz")]) == 1
    err = capsys.readouterr().err
    assert "no checkpoint at step 7; saved steps: [2, 3]" in err and len(err.splitlines()) == 1


def test_timm_model_on_exact_gelu_converts_with_a_one_line_warning():
    kw = dict(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3,
              no_embed_class=True, fc_norm=False, global_pool="avg", class_token=False)
    with pytest.warns(UserWarning, match="exact GELU") as record:
        params = interop.from_timm_model(VisionTransformer(**kw))  # timm's default: exact
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert params["embedding"]["kernel"].shape == (8, 8, 3, 16)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interop.from_timm_model(VisionTransformer(act_layer="gelu_tanh", **kw))
