"""Bad inputs named in one line each, with a suggestion where one is close."""
import pytest

from vitlib.configs import apply_overrides, load_config


def test_a_misspelt_nested_key_suggests_the_key():
    config = load_config("quickstart")
    with pytest.raises(ValueError) as err:
        apply_overrides(config, ["optim.lrr=1e-3"])
    message = str(err.value)
    assert "did you mean 'optim.lr'?" in message and "\n" not in message
    assert "total_steps" not in message  # only the keys of the section it names
    assert len(message) < 600


def test_a_misspelt_dataset_suggests_it_once():
    from vitlib.data import datasets

    with pytest.raises(datasets.DataError) as err:
        datasets.check_dataset("fashion_mnst")
    message = str(err.value)
    assert "did you mean 'fashion_mnist'? " in message, message  # not "'...' or '...'"
    assert "\n" not in message


def test_a_tfds_dataset_in_a_missing_data_dir_creates_nothing_and_says_where_it_looked(tmp_path):
    from vitlib.data import datasets

    missing = tmp_path / "does" / "not" / "exist"
    with pytest.raises(datasets.DataError) as err:
        datasets.prepare("mnist", str(missing))  # a TFDS name, never prepared there
    message = str(err.value)
    assert "\n" not in message and f"not prepared in {missing}" in message
    assert "vitlib.data.prepare build" in message and "tfds build" in message
    assert not (tmp_path / "does").exists()  # no downloads/ or dataset folders made


def test_an_unprepared_custom_dataset_says_it_is_not_prepared_and_where(tmp_path):
    from vitlib.data import datasets

    with pytest.raises(datasets.DataError) as err:
        datasets.check_dataset("my_flowers", str(tmp_path))
    message = str(err.value)
    assert "\n" not in message
    assert f"'my_flowers' is not prepared in {tmp_path} (it holds no prepared datasets)" in message
    # Once prepared there (a version folder with dataset_info.json), it is accepted.
    (tmp_path / "my_flowers" / "1.0.0").mkdir(parents=True)
    (tmp_path / "my_flowers" / "1.0.0" / "dataset_info.json").write_text("{}")
    datasets.check_dataset("my_flowers", str(tmp_path))


def test_the_training_cli_refuses_a_missing_data_dir_in_one_line(tmp_path):
    import subprocess
    import sys

    missing = tmp_path / "nowhere"
    out = subprocess.run([sys.executable, "-m", "vitlib.train", "--config", "quickstart",
                          "--workdir", str(tmp_path / "w"), "--set", "dataset=imagenet2012",
                          "--set", f"data_dir={missing}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not prepared in" in lines[0], out.stderr[-2000:]
    assert not missing.exists()


def test_a_corrupt_npz_or_pth_is_named_in_one_line_without_suggesting_pickles(tmp_path):
    import numpy as np

    from vitlib.models import interop
    from vitlib.models.interop.npz import read_npz
    from vitlib.models.interop.timm_vit import read_torch

    pickled = tmp_path / "objects.npz"
    np.savez(pickled, params=np.array([{"a": 1}], dtype=object))
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x02 definitely not a torch file")
    for path, read in ((pickled, read_npz), (broken, read_npz), (corrupt, read_torch)):
        with pytest.raises(interop.CheckpointError) as err:
            read(path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message, message
        assert "allow_pickle" not in message
    with pytest.raises(interop.CheckpointError, match="pickled Python objects, which vitlib "
                                                       "never loads"):
        read_npz(pickled)


def test_convert_without_from_says_so_in_one_line():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "vitlib.models.convert", "--to", "x.npz"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: the following arguments are required: --from (see --help)"]


def _train_cli(tmp_path, *sets):
    import subprocess
    import sys

    args = [a for s in sets for a in ("--set", s)]
    return subprocess.run([sys.executable, "-m", "vitlib.train", "--config", "quickstart",
                           "--workdir", str(tmp_path / "w"), *args],
                          capture_output=True, text=True, timeout=300)


def test_a_patch_that_does_not_tile_the_image_is_refused_unless_asked(tmp_path):
    from vitlib.configs import load_config, set_fields
    from vitlib.train.build import build_model

    # The CLI: one line naming the field, what would be dropped and what is allowed.
    out = _train_cli(tmp_path, "model.variant=Pico/5")  # Fashion-MNIST: 28 = 5 x 5 + 3
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode != 0 and len(lines) == 1, out.stderr[-2000:]
    assert "model.variant: 'Pico/5'" in lines[0] and "drops the last 3 pixel" in lines[0]
    assert "(1, 2, 4, 7, 14, 28)" in lines[0] and "model.drop_remainder_pixels=True" in lines[0]
    assert not (tmp_path / "w" / "result.json").exists()
    # Asked for, it builds the floor(28 / 15)^2 = 1 token model, warning once.
    config = set_fields(load_config("quickstart"), {"model.variant": "Pico/15"})
    with pytest.raises(ValueError, match="drops the last 13 pixel rows"):
        build_model(config, 28, 10)
    config.model.drop_remainder_pixels = True
    assert build_model(config, 28, 10).config.patch_size == 15
    # A patch that tiles is never refused.
    config = set_fields(load_config("quickstart"), {"model.variant": "Pico/7"})
    assert build_model(config, 28, 10).config.patch_size == 7


def test_cudnn_attention_on_a_cpu_is_refused_in_one_line(tmp_path):
    out = _train_cli(tmp_path, "model.attention=cudnn")
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode != 0 and len(lines) == 1, out.stderr[-2000:]
    assert "model.attention: 'cudnn' needs an NVIDIA GPU backend" in lines[0]
    assert "'cpu'" in lines[0]
    assert not (tmp_path / "w" / "result.json").exists()
    from vitlib.configs import load_config, set_fields
    from vitlib.train.build import check_config

    with pytest.raises(ValueError, match=r"^model.attention: 'flash' is not allowed; choose one "
                                         r"of \['xla', 'cudnn'\]$"):
        check_config(set_fields(load_config("quickstart"), {"model.attention": "flash"}))
    # A set image_size that the patch does not tile is refused before any data is read.
    with pytest.raises(ValueError, match="drops the last 2 pixel rows"):
        check_config(set_fields(load_config("quickstart"), {"image_size": 30}))
