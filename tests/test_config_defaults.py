"""One source of truth for every default: a value in ``conf/`` equals the Python default it sets.

Every mapping with a ``_target_`` in every YAML file under ``conf/`` (nested ones included, e.g.
``model.net``) names a callable; each of its keys that is a parameter of that callable with a
default in the signature must carry the same value in the YAML. A parameter without a Python
default is fine (the config is then the only place the value lives); a key that configs set to
different values (``launcher.n_parallel``: 2 local, 16 on SLURM) can only be such a parameter.
Interpolations (``${...}``), mappings and ``_``-keys are not compared, nor targets outside this
repository's packages (``lightning.Trainer``: its defaults are not ours to align).
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
#: Packages whose signature defaults this repository owns.
OWN_PACKAGES = ("gensim", "sampling")


def resolve_target(path: str):
    """The callable that ``_target_: path`` names (a module attribute, or a class attribute)."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"_target_ {path!r} names no importable module attribute")


def targeted_blocks(node, where: str):
    """Every (location, mapping) with a ``_target_`` inside ``node``, depth first."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield where, node
        for key, value in node.items():
            yield from targeted_blocks(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from targeted_blocks(value, f"{where}[{i}]")


def comparable(value) -> bool:
    """Whether a YAML value is a plain literal (not an interpolation, not a nested block)."""
    if isinstance(value, str):
        return "${" not in value
    if isinstance(value, list):
        return all(comparable(v) and not isinstance(v, dict) for v in value)
    return not isinstance(value, dict)


def same(config_value, python_default) -> bool:
    """YAML and Python values equal up to container type (list vs tuple) and int vs float."""
    if isinstance(python_default, (list, tuple)) and isinstance(config_value, list):
        return len(python_default) == len(config_value) and all(
            same(c, p) for c, p in zip(config_value, python_default)
        )
    if isinstance(python_default, bool) or isinstance(config_value, bool):
        return config_value is python_default
    if isinstance(python_default, (int, float)) and isinstance(config_value, (int, float)):
        return float(config_value) == float(python_default)
    return config_value == python_default


def disagreements(path: Path) -> list[str]:
    """``file:location.key: config X, Python Y`` for each config value its Python default contradicts."""
    found = []
    # OmegaConf's loader, as Hydra's: it reads 1e9 as a float where PyYAML reads a string.
    document = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    for where, block in targeted_blocks(document, path.relative_to(CONF).as_posix()):
        if block["_target_"].split(".")[0] not in OWN_PACKAGES:
            continue
        signature = inspect.signature(resolve_target(block["_target_"]))
        for key, value in block.items():
            parameter = signature.parameters.get(key)
            if key.startswith("_") or parameter is None or parameter.default is inspect.Parameter.empty:
                continue
            if comparable(value) and not same(value, parameter.default):
                found.append(
                    f"{where}.{key}: config {value!r}, Python default {parameter.default!r} ({block['_target_']})"
                )
    return found


YAMLS = sorted(CONF.rglob("*.yaml"))


@pytest.mark.parametrize("path", YAMLS, ids=[p.relative_to(CONF).as_posix() for p in YAMLS])
def test_config_values_equal_python_defaults(path):
    found = disagreements(path)
    assert not found, (
        "a config value and its Python signature default disagree; the config is the "
        "source of truth: set the Python default to it or remove it:\n" + "\n".join(found)
    )


def test_the_check_catches_a_disagreement(tmp_path, monkeypatch):
    """The check itself can fail: a config contradicting a signature default is reported."""
    monkeypatch.setattr(f"{__name__}.CONF", tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("net:\n  _target_: gensim.models.components.MLP\n  activation: tanh\n  hidden: [4]\n")
    found = disagreements(bad)
    assert len(found) == 1 and "bad.yaml.net.activation" in found[0]
