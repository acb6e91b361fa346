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
