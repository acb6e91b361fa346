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
