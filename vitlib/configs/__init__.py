"""Training configs (ml_collections): ``load_config("quickstart")`` or a path to a .py file
with ``get_config()``; ``apply_overrides(config, ["total_steps=100", "optim.lr=3e-3"])``."""
from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
from pathlib import Path

import ml_collections

CONFIG_DIR = Path(__file__).parent


def available() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))


def load_config(name_or_path: str) -> ml_collections.ConfigDict:
    path = Path(name_or_path)
    if path.suffix == ".py":
        if not path.is_file():
            raise ValueError(f"config: file {name_or_path!r} does not exist")
        spec = importlib.util.spec_from_file_location(f"vitlib_config_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    elif name_or_path in available():
        module = importlib.import_module(f"vitlib.configs.{name_or_path}")
    else:
        raise ValueError(f"config: {name_or_path!r} is neither a config name nor a .py file; "
                         f"names: {available()}")
    config = module.get_config()
    config.lock()  # a typo in a key is an error, not a silent new field
    return config


# Keys added to ``base`` after runs were cached, with their defaults. A run's identity (its
# cache key, the config in result.json, the workdir check) leaves them out while they hold
# these values, so runs trained before the keys existed are still read back, not retrained.
LATER_KEYS = {
    "input": {"pipeline": "memory", "workers": 0, "threads": 8, "worker_buffer": 2,
              "crop": "inception", "min_area": 0.05, "flip": True, "label_key": "label",
              "bad_images": "skip", "decoder": "simplejpeg-rows"},
    "model.head_bias_init": 0.0,
    "model.drop_remainder_pixels": False,
    "model.attention": "xla",
    "fewshot.suite": [],
    "fewshot.l2": "loso",
    "fewshot.every": 0,
    "fewshot.cache_gib": 0.0,
}


def run_identity(config_dict: dict) -> dict:
    """``config_dict`` (plain JSON data) without the ``LATER_KEYS`` that hold their default."""
    out = {**config_dict}
    for key, default in LATER_KEYS.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            if not isinstance(node.get(part), dict):
                break
            node[part] = node = {**node[part]}
        else:
            if leaf in node and node[leaf] == default:
                del node[leaf]
    return out


def from_record(record: dict) -> ml_collections.ConfigDict:
    """The config of a recorded run (result.json, config.json): the record's values over
    ``base``'s defaults, which fill in the keys a record leaves out (``LATER_KEYS``)."""
    from vitlib.configs import base

    def merge(node: ml_collections.ConfigDict, values: dict) -> None:
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(node.get(key), ml_collections.ConfigDict):
                merge(node[key], value)
            else:
                node[key] = value

    config = base.get_config()
    merge(config, record)
    return config


def valid_keys(config, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys.append(f"{prefix}{key}")  # settable whole, as a dict
            keys += valid_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def _parse(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
    """Apply ``key=value`` strings; dotted keys reach nested fields."""
    values = {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"--set: {item!r} is not key=value")
        key, text = item.split("=", 1)
        values[key.strip()] = _parse(text)
    return set_fields(config, values)


def set_fields(config: ml_collections.ConfigDict, values: dict) -> ml_collections.ConfigDict:
    """Set ``{dotted.key: value}`` on ``config`` in place, checking keys and types."""
    for key, value in values.items():
        if key not in valid_keys(config):
            keys = valid_keys(config)
            close = difflib.get_close_matches(key, keys, n=1)
            hint = (f"did you mean {close[0]!r}? " if close else "")
            raise ValueError(f"--set: unknown key {key!r}; {hint}valid keys: "
                             f"{_short(keys, key)}")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        old = node[leaf]
        if isinstance(old, ml_collections.ConfigDict):
            if not isinstance(value, dict):
                raise ValueError(f"--set: {key} must be a dict like {old.to_dict()!r}, got "
                                 f"{value!r}")
            with node.unlocked():
                node[leaf] = ml_collections.ConfigDict(value)
            continue
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(old, (tuple, list)) and isinstance(value, (tuple, list)):
            value = type(old)(value)
        if old is not None and type(value) is not type(old):
            raise ValueError(f"--set: {key} must be {type(old).__name__} like {old!r}, got "
                             f"{value!r}")
        node[leaf] = value
    return config


def _short(keys: list, key: str) -> str:
    """The valid keys under ``key``'s section (all of them for a top-level key), so the error
    stays one readable line."""
    section = key.rsplit(".", 1)[0] + "." if "." in key else ""
    near = [k for k in keys if k.startswith(section)] if section else [
        k for k in keys if "." not in k]
    return ", ".join(near or keys)
