"""Few-shot and fine-tuning straight from a converted checkpoint (a timm model here).

The few-shot numbers are checked against the same probe on features computed by timm itself
(images resized by torch); the grey-scale kernel adaptation against the RGB model on the grey
image repeated in three channels.
"""
import numpy as np
import pytest
from test_convert import import_timm, state_of, timm_vit

timm = import_timm()
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from vitlib.data import datasets  # noqa: E402
from vitlib.evals import fewshot  # noqa: E402
from vitlib.models import ViT, interop  # noqa: E402
from vitlib.train import from_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A timm ViT for 16 px RGB images, patch 4 (Femto's shape: 32 wide, 2 heads)."""
    model = timm_vit("tok", img_size=16, patch_size=4, embed_dim=32, num_heads=2,
                     mlp_ratio=4.0, num_classes=3)
    path = tmp_path_factory.mktemp("ckpt") / "femto.safetensors"
    save_file(state_of(model), str(path))
    return model, path


def test_grey_images_meet_an_rgb_kernel_exactly(checkpoint):
    _, path = checkpoint
    config, params = interop.load(path)
    grey = np.random.RandomState(0).randn(2, 16, 16, 1).astype(np.float32)
    rgb_out = ViT(config).apply({"params": params}, np.repeat(grey, 3, axis=3))[0]
    grey_out = ViT(config).apply({"params": from_checkpoint.adapt_channels(params, 1)}, grey)[0]
    np.testing.assert_allclose(grey_out, rgb_out, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"embedding/kernel: shape \(4, 4, 3, 32\) takes 3"):
        from_checkpoint.adapt_channels(params, 2)


def test_fewshot_from_a_checkpoint_matches_the_probe_on_timms_features(checkpoint):
    model, path = checkpoint
    got = from_checkpoint.fewshot_checkpoint(path, "digits", shots=(5, 10), seeds=(0, 1))

    def timm_features(images):  # digits are 28x28 grey: [-1, 1], bilinear to 16 px, RGB
        x = torch.from_numpy(images.astype(np.float32) * (2 / 255) - 1).permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False,
                          antialias=True)  # jax.image.resize antialiases when it shrinks
        with torch.no_grad():
            feats = model.forward_features(x.repeat(1, 3, 1, 1))
            return model.forward_head(feats, pre_logits=True).numpy()

    train_x, train_y = datasets.load_split("digits", "train")
    test_x, test_y = datasets.load_split("digits", "test")
    want = fewshot.fewshot_eval(timm_features(train_x), train_y, timm_features(test_x), test_y,
                                10, shots=(5, 10), seeds=(0, 1))
    for k in (5, 10):
        np.testing.assert_allclose(got[k]["accuracies"], want[k]["accuracies"],
                                   atol=2 / len(test_y))
        assert got[k]["mean"] > 0.3  # random features already separate digits


def test_finetune_from_a_checkpoint(checkpoint, tmp_path):
    _, path = checkpoint
    result = from_checkpoint.finetune_checkpoint(path, "digits", tmp_path / "ft", steps=40,
                                                 lr=0.1, batch_size=32, image_size=16,
                                                 progress=False)
    model = result["config"]["model"]
    assert (model["variant"], model["width"], model["pool_type"]) == ("Femto/4", 32, "tok")
    assert result["config"]["image_size"] == 16
    assert result["test_accuracy"] > 0.2  # chance 0.1; measured 0.32


def test_cli_errors(checkpoint, tmp_path, capsys):
    _, path = checkpoint
    assert from_checkpoint.main(["fewshot", "--from", str(path), "--dataset", "digits",
                                 "--variant", "Pico/4"]) == 1
    assert "embedding/kernel: shape (4, 4, 3, 32) found, (4, 4, 3, 64) expected" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        from_checkpoint.main(["fewshot", "--from", str(path), "--dataset", "digits",
                              "--image-size", "-3"])
