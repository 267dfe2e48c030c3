"""Stream-state files: numpy states round-trip exactly, written as tensors."""

from __future__ import annotations

import numpy as np
import torch

from gensim.callbacks.checkpointing import load_state, save_state


def test_state_round_trips_exactly_and_is_written_as_tensors(tmp_path):
    rng = np.random.default_rng(0)
    fields = rng.random((5, 3, 4), dtype=np.float32)
    state = {
        "storage": {
            "fields": fields,
            "live": np.array([True, False, True]),
            "sim_id": np.array([2**62 - 1, 7], dtype=np.uint64),
            "reversed": fields[::-1, :, ::-1],
            "column": fields[:, 1],
        },
        "masks": {3: 0b101},
        "rng": {"state": 12345678901234567890},
        "layout": [("T", (3, 4))],
        "scalar": np.float64(0.5),
        "empty": np.zeros((0, 4), dtype=np.int64),
    }
    path = tmp_path / "rank0-step000000010.buffer.ckpt"
    save_state(state, path)
    raw = torch.load(path, weights_only=False)
    # Arrays go to disk as tensors (raw storage, not pickled arrays): the reason for save_state.
    assert isinstance(raw["storage"]["fields"], torch.Tensor)
    assert isinstance(raw["storage"]["reversed"], torch.Tensor)
    loaded = load_state(path)
    for name, array in state["storage"].items():
        got = loaded["storage"][name]
        assert isinstance(got, np.ndarray) and got.dtype == array.dtype and np.array_equal(got, array), name
    assert loaded["masks"] == {3: 0b101} and loaded["rng"] == {"state": 12345678901234567890}
    assert loaded["layout"] == [("T", (3, 4))] and loaded["scalar"] == 0.5
    assert loaded["empty"].shape == (0, 4) and loaded["empty"].dtype == np.int64
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file was renamed over the target
