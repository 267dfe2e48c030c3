"""Packaging: every package is listed in pyproject.toml, and the Hydra configs ship as gensim.conf."""

import importlib.resources
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("gensim", "sampling")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found - listed == set(), "add these packages to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == {"gensim.conf"}


def test_configs_are_importable_as_gensim_conf():
    conf = importlib.resources.files("gensim.conf")
    assert conf.joinpath("train.yaml").is_file()
    groups = {p.name for p in conf.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert {"simulation", "sampler", "launcher", "transport", "buffer", "data", "model", "trainer"} <= groups
