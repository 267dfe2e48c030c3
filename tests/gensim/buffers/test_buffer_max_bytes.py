"""Capacity in bytes: every buffer config exposes ``max_bytes``; floats from the command line;
the smaller of the two bounds wins, and a lowered capacity is logged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from gensim.buffers import ReplayBuffer
from gensim.buffers.storage import Storage, byte_count
from gensim.simulations.base import FieldSpec

CONF = Path(__file__).resolve().parents[3] / "conf"
FIELDS = (FieldSpec("u", (16, 16)),)
PER_SAMPLE = Storage(1, FIELDS, 3).bytes_per_sample


def buffer_options() -> list[str]:
    return sorted(p.stem for p in (CONF / "buffer").glob("*.yaml"))


def build(*overrides: str) -> ReplayBuffer:
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["simulation.grid=16", *overrides])
    simulation = instantiate(cfg.simulation)
    return instantiate(cfg.buffer)(fields=simulation.fields, n_params=simulation.space.dim)


@pytest.mark.parametrize("name", buffer_options())
def test_every_buffer_config_takes_max_bytes_from_the_command_line(name):
    # 16 x 16 float32 fields: 1 KiB of values a sample, so 1e5 bytes hold fewer than 100 of
    # them: the bound in bytes wins over capacity=8000, written as on a command line.
    buf = build(f"buffer={name}", "buffer.max_bytes=1e5")
    assert buf.capacity == 100_000 // buf.storage.bytes_per_sample < 100
    assert buf.storage.nbytes <= 100_000
    assert build(f"buffer={name}").capacity == 8000  # null: capacity alone


def test_the_smaller_bound_wins():
    assert ReplayBuffer(5, FIELDS, 3, max_bytes=1e9).capacity == 5
    assert ReplayBuffer(5000, FIELDS, 3, max_bytes=50 * PER_SAMPLE + 1.7).capacity == 50


def test_lowered_capacity_is_logged_at_info(caplog):
    with caplog.at_level(logging.INFO, logger="gensim.buffers"):
        ReplayBuffer(5000, FIELDS, 3, max_bytes=50 * PER_SAMPLE)
        lowered = [r.getMessage() for r in caplog.records]
        ReplayBuffer(5, FIELDS, 3, max_bytes=50 * PER_SAMPLE)  # capacity fits: nothing to say
    assert lowered == [r.getMessage() for r in caplog.records]
    assert len(lowered) == 1 and "capacity 5000 samples lowered to 50" in lowered[0]
    assert f"{PER_SAMPLE} bytes per sample" in lowered[0]


@pytest.mark.parametrize("value", [0, -1, -1e9, 0.5, float("nan"), float("inf")])
def test_non_positive_or_non_finite_max_bytes_is_refused(value):
    with pytest.raises(ValueError, match="max_bytes must be a positive, finite number of bytes"):
        ReplayBuffer(10, FIELDS, 3, max_bytes=value)


@pytest.mark.parametrize("value", ["1e9", True])
def test_non_numeric_max_bytes_is_refused(value):
    with pytest.raises(TypeError, match="max_bytes must be a number of bytes"):
        ReplayBuffer(10, FIELDS, 3, max_bytes=value)


def test_byte_count_floors_floats():
    assert byte_count(1e9) == 10**9 and isinstance(byte_count(1e9), int)
    assert byte_count(2.9) == 2 and byte_count(None) is None
