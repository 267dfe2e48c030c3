"""Preallocated numpy storage for replay-buffer samples: the memory half of the buffer.

The storage knows nothing about which slot to write or which slots to read: the insert policy
(:mod:`gensim.buffers.policies`) and the draw rule (:mod:`gensim.buffers.draw`) decide that. It
only holds the arrays, allocated once at construction, so memory is bounded whatever the stream.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from gensim.simulations.base import FieldSpec, Sample

# Bytes per slot besides fields and params: t (float64), sim_id, step, draw count and arrival
# number (int64 each), live flag (bool).
_META_BYTES_PER_SLOT = 5 * 8 + 1

_ARRAYS = ("fields", "params", "t", "sim_id", "step", "draws", "seq", "live")

logger = logging.getLogger("gensim.buffers")


def byte_count(max_bytes: float | None) -> int | None:
    """A byte bound as an int: ``max_bytes`` floored, or None for no bound.

    Configs and command lines write sizes as floats (``buffer.max_bytes=1e9``), so any finite
    real number is accepted.

    Parameters
    ----------
    max_bytes : int, float or None

    Returns
    -------
    int or None
        ``>= 1``.

    Raises
    ------
    TypeError
        Not a number (a string, a bool).
    ValueError
        Not finite, or below 1 byte.
    """
    if max_bytes is None:
        return None
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Real):
        raise TypeError(
            f"max_bytes must be a number of bytes such as 1e9 (or null for no bound), got "
            f"{type(max_bytes).__name__} {max_bytes!r}"
        )
    if not math.isfinite(max_bytes) or max_bytes < 1:
        raise ValueError(
            f"max_bytes must be a positive, finite number of bytes such as 1e9 (or null for no "
            f"bound), got {max_bytes!r}"
        )
    return int(max_bytes)


class Storage:
    """Fixed-size arrays holding up to ``capacity`` samples, one row (slot) per sample.

    The fields of a sample are flattened (C order) and concatenated in :class:`FieldSpec`
    order into one float32 row, so a batch is a single fancy-indexing copy.

    Parameters
    ----------
    capacity : int
        Maximum number of samples, >= 1.
    fields : sequence of FieldSpec
        Fields of one sample, in the order they are concatenated.
    n_params : int
        Length of the parameter vector, >= 0.
    max_bytes : int or float, optional
        Upper bound on the allocated bytes, floored to an int (``1e9`` is accepted); when it
        holds fewer than ``capacity`` samples, the capacity is lowered to fit it (logged at
        INFO on ``gensim.buffers``): of the two bounds, the smaller wins.

    Attributes
    ----------
    fields : ndarray, shape (capacity, D), float32
        Flattened fields, ``D = sum(spec.size for spec in field_specs)``.
    params : ndarray, shape (capacity, n_params), float32
        Parameter vectors.
    t : ndarray, shape (capacity,), float64
        Physical times.
    sim_id, step : ndarray, shape (capacity,), int64
        Simulation id and time-step index of each slot's sample.
    draws : ndarray, shape (capacity,), int64
        How many times each slot's current sample has been drawn.
    seq : ndarray, shape (capacity,), int64
        Arrival number of each slot's sample (0 for the first sample the buffer saw); draw
        rules that follow arrival order read it.
    live : ndarray, shape (capacity,), bool
        Whether the slot holds a sample that can be drawn (False before the first write and
        after a consuming draw).
    size : int
        Number of live slots.
    filled : int
        One past the highest slot ever written: slots ``>= filled`` have never held data, so a
        checkpoint saves the arrays up to ``filled`` only.
    """

    def __init__(
        self,
        capacity: int,
        fields: Sequence[FieldSpec],
        n_params: int,
        max_bytes: float | None = None,
    ) -> None:
        self.field_specs = tuple(fields)
        if not self.field_specs or not all(isinstance(f, FieldSpec) for f in self.field_specs):
            raise ValueError(
                f"expected a non-empty sequence of FieldSpec, got {fields!r}; pass the simulation's `fields` attribute"
            )
        names = [f.name for f in self.field_specs]
        if len(set(names)) != len(names):
            raise ValueError(f"field names must be unique, got {names}; rename the duplicates")
        if int(capacity) != capacity or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        if int(n_params) != n_params or n_params < 0:
            raise ValueError(f"n_params must be an integer >= 0, got {n_params!r}")
        self.n_params = int(n_params)

        # Column range of each field in a flattened row, in FieldSpec order.
        self.field_slices: dict[str, slice] = {}
        offset = 0
        for spec in self.field_specs:
            self.field_slices[spec.name] = slice(offset, offset + spec.size)
            offset += spec.size
        self.n_features = offset
        # (name, columns, shape) of each field: what write() needs, without lookups per sample.
        self._field_layout = tuple((f.name, self.field_slices[f.name], f.shape) for f in self.field_specs)

        self.bytes_per_sample = 4 * (self.n_features + self.n_params) + _META_BYTES_PER_SLOT
        capacity = int(capacity)
        max_bytes = byte_count(max_bytes)
        if max_bytes is not None:
            fit = max_bytes // self.bytes_per_sample
            if fit < 1:
                raise ValueError(
                    f"max_bytes={max_bytes} cannot hold one sample: a sample takes "
                    f"{self.bytes_per_sample} bytes ({self.n_features} field values and "
                    f"{self.n_params} params as float32, plus {_META_BYTES_PER_SLOT} bytes of "
                    f"metadata); raise max_bytes to at least {self.bytes_per_sample} or drop it"
                )
            if fit < capacity:
                logger.info(
                    "replay buffer: capacity %d samples lowered to %d, the most that max_bytes=%d "
                    "holds at %d bytes per sample (%d field values, %d params)",
                    capacity,
                    fit,
                    max_bytes,
                    self.bytes_per_sample,
                    self.n_features,
                    self.n_params,
                )
                capacity = fit
        self.capacity = capacity

        self.fields = np.zeros((capacity, self.n_features), dtype=np.float32)
        self.params = np.zeros((capacity, self.n_params), dtype=np.float32)
        self.t = np.zeros(capacity, dtype=np.float64)
        self.sim_id = np.zeros(capacity, dtype=np.int64)
        self.step = np.zeros(capacity, dtype=np.int64)
        self.draws = np.zeros(capacity, dtype=np.int64)
        self.seq = np.zeros(capacity, dtype=np.int64)
        self.live = np.zeros(capacity, dtype=bool)
        self.size = 0
        self.filled = 0

    @property
    def nbytes(self) -> int:
        """Bytes allocated by the arrays; constant for the life of the storage."""
        return sum(getattr(self, name).nbytes for name in _ARRAYS)

    def write(self, slot: int, sample: Sample, seq: int) -> bool:
        """Copy ``sample`` into ``slot``, casting to float32, and reset the slot's draw count.

        The sample must already be validated (field names and shapes, params length): this is
        the hot path and checks nothing per element.

        Parameters
        ----------
        slot : int
            Row to write, ``0 <= slot < capacity``.
        sample : Sample
            The time step to store.
        seq : int
            Its arrival number.

        Returns
        -------
        bool
            True when a live sample was overwritten (an eviction).
        """
        row = self.fields[slot]
        fields = sample.fields
        for name, columns, shape in self._field_layout:
            # A contiguous row slice reshapes to a view, so this copies (and casts) the field
            # straight into storage without a flattened temporary.
            row[columns].reshape(shape)[...] = fields[name]
        self.params[slot] = sample.params
        self.t[slot] = sample.t
        self.sim_id[slot] = sample.sim_id
        self.step[slot] = sample.step
        self.seq[slot] = seq
        self.draws[slot] = 0
        evicted = bool(self.live[slot])
        if not evicted:
            self.live[slot] = True
            self.size += 1
        if slot >= self.filled:
            self.filled = slot + 1
        return evicted

    def write_many(self, slots: np.ndarray, samples: Sequence[Sample], seqs: np.ndarray) -> int:
        """:meth:`write` of several samples into distinct slots; the metadata in one copy per array.

        Parameters
        ----------
        slots : ndarray, shape (m,), int64
            Distinct rows to write.
        samples : sequence of Sample, length m
            Validated time steps.
        seqs : ndarray, shape (m,), int64
            Their arrival numbers.

        Returns
        -------
        int
            How many live samples were overwritten (evictions).
        """
        fields_rows = self.fields
        for slot, sample in zip(slots.tolist(), samples):
            row = fields_rows[slot]
            fields = sample.fields
            for name, columns, shape in self._field_layout:
                row[columns].reshape(shape)[...] = fields[name]
        self.params[slots] = [sample.params for sample in samples]
        self.t[slots] = [sample.t for sample in samples]
        self.sim_id[slots] = [sample.sim_id for sample in samples]
        self.step[slots] = [sample.step for sample in samples]
        self.seq[slots] = seqs
        self.draws[slots] = 0
        evicted = int(np.count_nonzero(self.live[slots]))
        self.live[slots] = True
        self.size += len(slots) - evicted
        self.filled = max(self.filled, int(slots.max()) + 1)
        return evicted

    def read(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Copy the samples in ``slots`` into a batch and count one draw for each.

        Parameters
        ----------
        slots : ndarray, shape (B,), int
            Live slots; repeats allowed (a draw with replacement).

        Returns
        -------
        dict
            ``params`` (B, n_params) float32, ``t`` (B,) float32, ``fields`` (B, D) float32,
            ``sim_id`` (B,) int64, ``step`` (B,) int64; copies, safe to keep after later writes.
        """
        # add.at, not draws[slots] += 1, so that a slot drawn twice in one batch counts twice.
        np.add.at(self.draws, slots, 1)
        return {
            "params": self.params[slots],
            "t": self.t[slots].astype(np.float32),
            "fields": self.fields[slots],
            "sim_id": self.sim_id[slots],
            "step": self.step[slots],
        }

    def release(self, slots: np.ndarray) -> None:
        """Mark ``slots`` free after a consuming draw; their rows are reused by later writes.

        Parameters
        ----------
        slots : ndarray, shape (B,), int
            Distinct live slots.
        """
        self.live[slots] = False
        self.size -= len(slots)

    def free_slot(self) -> int | None:
        """A slot that holds no live sample, or None when the storage is full.

        Never-written slots come first, in order; then the lowest slot a consuming draw freed.

        Returns
        -------
        int or None
        """
        if self.filled < self.capacity:
            return self.filled
        if self.size < self.capacity:
            return int(np.argmin(self.live))
        return None

    def live_slots(self) -> np.ndarray:
        """Indices of the live slots, ascending.

        Returns
        -------
        ndarray, shape (size,), int64
        """
        if self.size == self.filled:
            # Every written slot is live (all non-consuming policies): no scan needed.
            return np.arange(self.filled, dtype=np.int64)
        return np.flatnonzero(self.live[: self.filled]).astype(np.int64, copy=False)

    def state_dict(self) -> dict[str, Any]:
        """Copies of the arrays up to :attr:`filled`, and the layout they were written with.

        Returns
        -------
        dict
            Plain numpy arrays and ints (picklable, ``torch.save``-able).
        """
        state: dict[str, Any] = {name: getattr(self, name)[: self.filled].copy() for name in _ARRAYS}
        state.update(
            capacity=self.capacity,
            n_features=self.n_features,
            n_params=self.n_params,
            field_specs=[(f.name, f.shape) for f in self.field_specs],
            filled=self.filled,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output into the preallocated arrays (no reallocation).

        Parameters
        ----------
        state : dict
            From :meth:`state_dict` of a storage with the same capacity, fields and n_params.
        """
        expected = (self.capacity, [(f.name, f.shape) for f in self.field_specs], self.n_params)
        got = (
            state["capacity"],
            [(name, tuple(shape)) for name, shape in state["field_specs"]],
            state["n_params"],
        )
        if got != expected:
            raise ValueError(
                f"checkpoint layout (capacity, fields, n_params) = {got} does not match this "
                f"storage's {expected}; build the buffer with the checkpoint's capacity, "
                "fields and n_params (and the same max_bytes)"
            )
        filled = int(state["filled"])
        for name in _ARRAYS:
            array = getattr(self, name)
            array[:filled] = state[name]
            # Slots past the checkpoint's fill level never held data in the saved run.
            array[filled:] = 0
        self.filled = filled
        self.size = int(self.live[:filled].sum())
