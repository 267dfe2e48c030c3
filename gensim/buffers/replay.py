"""The thread-safe replay buffer between the receiver thread and the training loop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gensim.buffers.draw import DrawRule
from gensim.buffers.policies import InsertPolicy, Reservoir
from gensim.buffers.storage import Storage
from gensim.simulations.base import FieldSpec, Sample

_STATE_VERSION = 2

# Lifetime draw counts of retired samples are histogrammed in bins 0 .. _MAX_DRAWS_BIN, the
# last bin holding every count >= _MAX_DRAWS_BIN: bounded memory whatever the stream.
_MAX_DRAWS_BIN = 64
#: ``add_many`` takes its batch path (the policy's ``select_slots``, one fancy-indexed write per
#: array) from this many samples on; fewer go one by one as in ``add``, under the same lock. A
#: batch write costs a dozen small numpy calls whatever its size: measured on the default buffer
#: at 64 x 64, one sample costs 11 us through it against 5.5 us through ``add``, and a receiver
#: that keeps up with its senders hands over batches of one to a few samples.
_BATCH_PATH_MIN = 4

_COUNTERS = ("n_seen", "n_stored", "n_discarded", "n_evicted", "n_consumed", "n_drawn")


def _shape(value: Any) -> tuple[int, ...]:
    """``np.shape(value)``, without its dispatch overhead for arrays (the per-sample case)."""
    shape = getattr(value, "shape", None)
    return np.shape(value) if shape is None else shape


class ReplayBuffer:
    """Bounded replay memory fed by a stream of simulation time steps, drawn into batches.

    It joins three parts, each with ``state_dict``: a :class:`~gensim.buffers.storage.Storage`
    (preallocated arrays), an insert policy (which slot an arriving sample takes, if any) and a
    draw rule (which slots a batch reads). One thread may :meth:`add` while another draws.

    Parameters
    ----------
    capacity : int
        Maximum number of stored samples, >= 1.
    fields : sequence of FieldSpec
        Fields of one sample; they are flattened and concatenated in this order.
    n_params : int
        Length of the parameter vector.
    policy : InsertPolicy, optional
        Insert policy (Hydra builds it from ``_target_``), default :class:`Reservoir`; its :meth:`~gensim.buffers.policies.InsertPolicy.default_draw_rule`
        is used unless ``draw_rule`` is given.
    seed : int, default 0
        Seeds the insert policy's and the draw rule's generators (independent streams).
    max_bytes : int or float, optional
        Bound on the storage's bytes, floored to an int (configs may write ``1e9``); when it
        holds fewer than ``capacity`` samples, ``capacity`` is lowered to fit and the capacity
        used is logged at INFO: of the two bounds, the smaller wins (see :attr:`capacity`).
    draw_rule : DrawRule, optional
        Overrides the policy's draw rule.

    Notes
    -----
    Built by Hydra with ``_partial_: true``; the data module supplies ``fields`` and
    ``n_params`` at run time.
    """

    def __init__(
        self,
        capacity: int,
        fields: Sequence[FieldSpec],
        n_params: int,
        policy: InsertPolicy | None = None,
        seed: int = 0,
        max_bytes: float | None = None,
        draw_rule: DrawRule | None = None,
    ) -> None:
        if policy is None:
            policy = Reservoir()
        elif not isinstance(policy, InsertPolicy):
            raise TypeError(
                f"policy must be an InsertPolicy instance, got {type(policy).__name__}; pass e.g. "
                "gensim.buffers.Reservoir() (in a config: policy: {_target_: gensim.buffers.Reservoir})"
            )
        self._storage = Storage(capacity, fields, n_params, max_bytes=max_bytes)
        self._policy = policy
        self._draw_rule = draw_rule if draw_rule is not None else policy.default_draw_rule()
        policy_seed, draw_seed = np.random.SeedSequence(seed).spawn(2)
        self._policy.bind(self.capacity, np.random.default_rng(policy_seed))
        self._draw_rule.bind(self.capacity, np.random.default_rng(draw_seed))
        self._field_names = frozenset(self._storage.field_slices)
        self._field_shapes = tuple((spec.name, spec.shape) for spec in self._storage.field_specs)
        self._field_order = [spec.name for spec in self._storage.field_specs]
        self._shape_list = [spec.shape for spec in self._storage.field_specs]

        # One lock, two conditions: adders wait for space, drawers wait for data.
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._data = threading.Condition(self._lock)
        self._closed = False
        # Threads waiting on _data: add() notifies only when there is one (a notify costs
        # about a microsecond, on every insert otherwise).
        self._data_waiters = 0
        self._n_seen = self._n_stored = self._n_discarded = 0
        self._n_evicted = self._n_consumed = self._n_drawn = 0
        self._retired_draws = np.zeros(_MAX_DRAWS_BIN + 1, dtype=np.int64)

    # --- description -------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Number of slots, after any lowering by ``max_bytes``."""
        return self._storage.capacity

    @property
    def fields(self) -> tuple[FieldSpec, ...]:
        """Fields of one sample, in the order of the columns of ``batch["fields"]``."""
        return self._storage.field_specs

    @property
    def field_slices(self) -> dict[str, slice]:
        """Columns of each field in ``batch["fields"]``; reshape them to ``spec.shape``."""
        return dict(self._storage.field_slices)

    @property
    def storage(self) -> Storage:
        """The storage; read it only while no other thread uses the buffer."""
        return self._storage

    @property
    def policy(self) -> InsertPolicy:
        """The insert policy."""
        return self._policy

    @property
    def draw_rule(self) -> DrawRule:
        """The draw rule."""
        return self._draw_rule

    @property
    def closed(self) -> bool:
        """True after :meth:`close`: the stream has ended."""
        return self._closed

    def __len__(self) -> int:
        """Number of samples stored now (drawable)."""
        return self._storage.size

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(policy={type(self._policy).__name__}, "
            f"draw_rule={type(self._draw_rule).__name__}, size={len(self)}/{self.capacity})"
        )

    # --- producer side -----------------------------------------------------------------------

    def add(self, sample: Sample, timeout: float | None = None) -> bool:
        """Offer one time step to the buffer; the insert policy stores it or discards it.

        Fields are flattened in FieldSpec order and cast to float32. When the policy cannot
        place a sample now (a full FIFO), this waits until a draw frees space.

        Parameters
        ----------
        sample : Sample
            A validated time step: ``fields`` has exactly the declared names and shapes,
            ``params`` has shape (n_params,).
        timeout : float, optional
            Seconds to wait for space; None waits until space or :meth:`close`.

        Returns
        -------
        bool
            True if stored; False if the policy discarded it or the buffer is closed.

        Raises
        ------
        ValueError
            Wrong field names or shapes, or wrong params length.
        TimeoutError
            No space within ``timeout``.
        """
        self._check(sample)
        with self._lock:
            stored = self._wait_ready(timeout) and self._insert(sample)
            if stored and self._data_waiters:
                self._data.notify_all()
            return stored

    def add_many(self, samples: Sequence[Sample], timeout: float | None = None) -> list[bool]:
        """Offer consecutive time steps at once: the content of one :meth:`add` each, cheaper.

        Every sample is checked before any is inserted, then all are inserted under one hold
        of the lock with one notification. A policy with a batch path
        (:meth:`~gensim.buffers.policies.InsertPolicy.select_slots`) chooses the slots of a
        batch of at least ``_BATCH_PATH_MIN`` samples, written with one fancy-indexed copy per
        array; smaller batches and the other policies go arrival by arrival as in :meth:`add`,
        waiting for space (``timeout`` for each sample) when they are not ready. For the same seed and arrivals the buffer ends exactly as
        after one :meth:`add` per sample.

        Parameters
        ----------
        samples : sequence of Sample, length n
            Validated time steps, in arrival order.
        timeout : float, optional
            Seconds to wait for space for each sample; None waits until space or :meth:`close`.

        Returns
        -------
        list of bool, length n
            Whether each sample was stored (False: discarded by the policy, or the buffer
            closed).

        Raises
        ------
        ValueError
            A sample with wrong field names or shapes or params length; none is inserted.
        TimeoutError
            No space within ``timeout``; the samples before it are inserted.
        """
        self._check_many(samples)
        stored = [False] * len(samples)
        with self._lock:
            try:
                pos = 0
                while pos < len(samples):
                    if not self._wait_ready(timeout):
                        break
                    slots = (
                        self._policy.select_slots(samples[pos:], self._n_seen, self._storage)
                        if len(samples) - pos >= _BATCH_PATH_MIN
                        else None
                    )
                    if slots is None:
                        stored[pos] = self._insert(samples[pos])
                        pos += 1
                        continue
                    stored[pos:] = self._write_batch(samples[pos:], slots)
                    break
            finally:
                if self._data_waiters and any(stored):
                    self._data.notify_all()
        return stored

    def _wait_ready(self, timeout: float | None) -> bool:
        """Wait until the policy can place a sample; False if the buffer is closed. Lock held."""
        # Test before waiting: a policy that never waits skips building the predicate.
        ready = self._closed or self._policy.ready(self._storage)
        if not ready and not self._space.wait_for(lambda: self._closed or self._policy.ready(self._storage), timeout):
            raise TimeoutError(
                f"add: the {type(self._policy).__name__} policy found no free slot within "
                f"{timeout} s ({len(self)}/{self.capacity} stored; it waits for draws to "
                "consume samples); check that the training loop is drawing, or raise the "
                "timeout or the capacity"
            )
        return not self._closed

    def _insert(self, sample: Sample) -> bool:
        """Place one sample as the policy says (it is ready); whether it was stored. Lock held."""
        seq = self._n_seen
        self._n_seen += 1
        slot = self._policy.select_slot(sample, seq, self._storage)
        if slot is None:
            self._n_discarded += 1
            self._retired_draws[0] += 1
            return False
        if self._storage.live[slot]:
            self._retired_draws[min(int(self._storage.draws[slot]), _MAX_DRAWS_BIN)] += 1
        self._n_evicted += self._storage.write(slot, sample, seq)
        self._n_stored += 1
        return True

    def _write_batch(self, samples: Sequence[Sample], slots: list[int | None]) -> list[bool]:
        """Write the policy's slots for consecutive arrivals, counting as sequential inserts would. Lock held.

        Parameters
        ----------
        samples : sequence of Sample, length n
        slots : list of (int or None), length n
            From :meth:`InsertPolicy.select_slots`.

        Returns
        -------
        list of bool, length n
            Whether each sample was stored.
        """
        first_seq = self._n_seen
        n = len(samples)
        self._n_seen += n
        kept = [i for i, slot in enumerate(slots) if slot is not None]
        n_discarded = n - len(kept)
        self._n_discarded += n_discarded
        self._retired_draws[0] += n_discarded
        if kept:
            # A slot chosen twice in the batch keeps its last arrival; the earlier ones were
            # evicted within the batch, undrawn. The dict maps each slot to its last writer.
            last = {slots[i]: i for i in kept}
            unique = np.fromiter(last, dtype=np.int64, count=len(last))
            storage = self._storage
            live = storage.live[unique]
            drawn = np.minimum(storage.draws[unique[live]], _MAX_DRAWS_BIN)
            self._retired_draws += np.bincount(drawn, minlength=_MAX_DRAWS_BIN + 1)
            within = len(kept) - len(unique)
            self._retired_draws[0] += within
            writers = list(last.values())
            self._n_evicted += within + storage.write_many(
                unique, [samples[i] for i in writers], np.asarray(writers, dtype=np.int64) + first_seq
            )
            self._n_stored += len(kept)
        stored = [False] * n
        for i in kept:
            stored[i] = True
        return stored

    def _check(self, sample: Sample) -> None:
        """Raise ValueError unless ``sample`` matches the declared fields and n_params.

        Only names and shapes are compared (no per-element work): the receiver has already
        validated values, and this runs for every time step.
        """
        fields = sample.fields
        if fields.keys() != self._field_names:
            raise ValueError(
                f"sample (sim {sample.sim_id}, step {sample.step}): expected fields "
                f"{sorted(self._field_names)}, got {sorted(fields)}; send exactly the fields "
                "the simulation declares"
            )
        for name, expected in self._field_shapes:
            shape = _shape(fields[name])
            if shape != expected:
                raise ValueError(
                    f"sample (sim {sample.sim_id}, step {sample.step}): field {name!r} "
                    f"expected shape {expected}, got {shape}; send the shape its FieldSpec declares"
                )
        if _shape(sample.params) != (self._storage.n_params,):
            raise ValueError(
                f"sample (sim {sample.sim_id}, step {sample.step}): expected params of shape "
                f"({self._storage.n_params},), got {np.shape(sample.params)}; build the buffer "
                "with the parameter space's dimension"
            )

    def _check_many(self, samples: Sequence[Sample]) -> None:
        """:meth:`_check` of each sample, with a fast path for numpy arrays of the right shapes.

        The fast path compares the ``shape`` attributes in one list comparison per sample
        (about a third of :meth:`_check`'s cost, which serves any array-like); a sample it does
        not pass (a missing ``shape``, any mismatch) goes through :meth:`_check`, which raises
        with the message or accepts an array-like of the right shape.
        """
        names, order, shapes = self._field_names, self._field_order, self._shape_list
        params_shape = (self._storage.n_params,)
        for sample in samples:
            fields = sample.fields
            try:
                fast = (
                    fields.keys() == names
                    and sample.params.shape == params_shape
                    and [fields[name].shape for name in order] == shapes
                )
            except AttributeError:
                fast = False
            if not fast:
                self._check(sample)

    def _wait_for_data(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """``self._data.wait_for``, counted in ``_data_waiters``; call with the lock held."""
        self._data_waiters += 1
        try:
            return self._data.wait_for(predicate, timeout)
        finally:
            self._data_waiters -= 1

    def close(self) -> None:
        """Mark the end of the stream and wake every waiting :meth:`add`, :meth:`draw` and :meth:`wait_for`.

        Stored samples stay drawable; later :meth:`add` calls return False.
        """
        with self._lock:
            self._closed = True
            self._space.notify_all()
            self._data.notify_all()

    # --- consumer side -----------------------------------------------------------------------

    def draw(self, batch_size: int, timeout: float | None = None) -> dict[str, np.ndarray] | None:
        """Draw one batch (copies) and count one draw for each drawn sample.

        Waits until ``batch_size`` samples are stored (``min(batch_size, capacity)`` for a draw
        rule with replacement) or the buffer is closed. After :meth:`close`, a consuming rule
        (FIFO) returns the remaining samples, fewer than ``batch_size`` at the end, then None; a
        rule with replacement keeps drawing full batches from what is stored.

        Parameters
        ----------
        batch_size : int
            Number of samples B, >= 1 (and <= capacity for a consuming rule).
        timeout : float, optional
            Seconds to wait; None waits until enough samples or :meth:`close`.

        Returns
        -------
        dict or None
            ``params`` (B, n_params) float32, ``t`` (B,) float32, ``fields`` (B, D) float32 (see
            :attr:`field_slices`), ``sim_id`` (B,) int64, ``step`` (B,) int64, and ``weight``
            (B,) float32 when the policy gives importance weights
            (:meth:`~gensim.buffers.policies.InsertPolicy.batch_weights`); None when the buffer
            is closed and empty.

        Raises
        ------
        TimeoutError
            Not enough samples within ``timeout``.
        """
        consumes = self._draw_rule.consumes
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if consumes and batch_size > self.capacity:
            raise ValueError(
                f"batch_size {batch_size} exceeds the capacity {self.capacity} of a consuming "
                f"({type(self._draw_rule).__name__}) buffer, so a full batch could never be "
                "there; lower batch_size or raise capacity"
            )
        need = batch_size if consumes else min(batch_size, self.capacity)
        with self._lock:
            if not self._wait_for_data(lambda: self._closed or self._storage.size >= need, timeout):
                raise TimeoutError(
                    f"draw({batch_size}): {len(self)} of the {need} samples needed arrived "
                    f"within {timeout} s; check that simulations are running and sending, or "
                    "raise the timeout"
                )
            if self._storage.size == 0:
                return None
            n = min(batch_size, self._storage.size) if consumes else batch_size
            slots = self._draw_rule.select(n, self._storage)
            batch = self._storage.read(slots)
            weights = self._policy.batch_weights(slots, self._storage)
            if weights is not None:
                batch["weight"] = weights
            self._n_drawn += n
            if consumes:
                drawn = np.minimum(self._storage.draws[slots], _MAX_DRAWS_BIN)
                self._retired_draws += np.bincount(drawn, minlength=_MAX_DRAWS_BIN + 1)
                self._storage.release(slots)
                self._policy.released(slots, self._storage)
                self._n_consumed += n
            # Drawing frees space for a consuming rule, and makes samples evictable for a policy
            # that evicts only drawn samples (MelissaReservoir): wake a waiting add either way.
            self._space.notify_all()
            return batch

    def wait_for(self, n: int, timeout: float | None = None) -> bool:
        """Wait until at least ``n`` samples are stored (the watermark before training starts).

        Parameters
        ----------
        n : int
            Watermark, ``0 <= n <= capacity``.
        timeout : float, optional
            Seconds to wait; None waits until reached or closed.

        Returns
        -------
        bool
            True once ``len(self) >= n``; False on timeout or if the buffer was closed first.
        """
        if not 0 <= n <= self.capacity:
            raise ValueError(
                f"watermark must be in [0, capacity={self.capacity}], got {n}; lower it or raise the capacity"
            )
        with self._lock:
            self._wait_for_data(lambda: self._closed or self._storage.size >= n, timeout)
            return self._storage.size >= n

    # --- monitoring --------------------------------------------------------------------------

    def draw_counts(self) -> np.ndarray:
        """How many times each stored sample has been drawn.

        Returns
        -------
        ndarray, shape (len(self),), int64
            In slot order.
        """
        with self._lock:
            return self._storage.draws[self._storage.live_slots()]

    def contents(self) -> dict[str, np.ndarray]:
        """The metadata of the stored samples (no fields), copied under the lock.

        Returns
        -------
        dict
            ``params`` (N, n_params) float32, ``t`` (N,) float64, ``sim_id``, ``step``,
            ``draws``, ``seq`` (N,) int64, in slot order, N = ``len(self)``.
        """
        with self._lock:
            live = self._storage.live_slots()
            return {
                name: getattr(self._storage, name)[live] for name in ("params", "t", "sim_id", "step", "draws", "seq")
            }

    def retired_draws(self) -> np.ndarray:
        """Histogram of how many times each sample that left the buffer had been drawn.

        A discarded arrival counts as 0 draws, an evicted or consumed sample with its draw
        count when it left (1 for a FIFO). Stored samples are not included (see
        :meth:`draw_counts`).

        Returns
        -------
        ndarray, shape (65,), int64
            Entry k counts samples drawn k times; the last entry counts those drawn 64 times
            or more.
        """
        with self._lock:
            return self._retired_draws.copy()

    def stats(self) -> dict[str, float | int]:
        """Counters for logging.

        Returns
        -------
        dict
            ``size``, ``capacity``; ``n_seen`` (arrivals offered to the policy) =
            ``n_stored + n_discarded``; ``n_evicted`` (stored samples overwritten),
            ``n_consumed`` (removed by a consuming draw), so ``size = n_stored - n_evicted -
            n_consumed``; ``n_drawn`` (samples drawn, with repeats); ``bytes`` (allocated
            storage); ``mean_draws`` (mean draw count of the stored samples, 0.0 when empty).
        """
        with self._lock:
            draws = self._storage.draws[self._storage.live_slots()]
            return {
                "size": self._storage.size,
                "capacity": self.capacity,
                "n_seen": self._n_seen,
                "n_stored": self._n_stored,
                "n_discarded": self._n_discarded,
                "n_evicted": self._n_evicted,
                "n_consumed": self._n_consumed,
                "n_drawn": self._n_drawn,
                "bytes": self._storage.nbytes,
                "mean_draws": float(draws.mean()) if len(draws) else 0.0,
            }

    # --- checkpointing -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: storage content, policy, draw rule, counters.

        The closed flag is not saved: a restored buffer receives a new stream.

        Returns
        -------
        dict
            Plain numpy arrays, ints and dicts (picklable, ``torch.save``-able).
        """
        with self._lock:
            return {
                "version": _STATE_VERSION,
                "policy_type": type(self._policy).__name__,
                "draw_rule_type": type(self._draw_rule).__name__,
                "storage": self._storage.state_dict(),
                "policy": self._policy.state_dict(),
                "draw_rule": self._draw_rule.state_dict(),
                "counters": {name: getattr(self, f"_{name}") for name in _COUNTERS},
                "retired_draws": self._retired_draws.copy(),
            }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output into this buffer.

        Parameters
        ----------
        state : dict
            From a buffer built with the same capacity, fields, n_params, policy and draw rule
            (the seed does not matter: the generator states are restored).
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"expected a replay-buffer state of version {_STATE_VERSION}, got "
                f"{state.get('version')!r}; it was saved by an incompatible gensim"
            )
        mine = (type(self._policy).__name__, type(self._draw_rule).__name__)
        theirs = (state["policy_type"], state["draw_rule_type"])
        if mine != theirs:
            raise ValueError(
                f"checkpoint was saved with (policy, draw rule) = {theirs}, this buffer has "
                f"{mine}; build the buffer with the checkpoint's policy"
            )
        with self._lock:
            self._storage.load_state_dict(state["storage"])
            self._policy.load_state_dict(state["policy"])
            self._draw_rule.load_state_dict(state["draw_rule"])
            for name in _COUNTERS:
                setattr(self, f"_{name}", int(state["counters"][name]))
            self._retired_draws[:] = state["retired_draws"]
            self._space.notify_all()
            self._data.notify_all()
