"""The distribution-aware insert policy: a buffer whose content tracks the target law over (parameters, time).

On-line data are not i.i.d.: the steps of a simulation arrive in order, simulations come in
waves, and an active sampler over-samples hard regions on purpose. A reservoir keeps a uniform
subset of what has *arrived*, so its content inherits those biases until the stream is over.
:class:`DistributionAware` instead shares the capacity among strata of (parameters, time)
(:class:`~gensim.buffers.Strata`) in proportion to their target mass. With
``importance_weights=True`` (off in ``conf/buffer/distribution.yaml``) it also adds importance
weights to each batch, so that the loss follows the target (correcting what the balance cannot
fix yet: strata short of arrivals) or the arrivals (the sampler's deliberate emphasis).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from gensim.buffers.draw import DrawRule, UniformDraw
from gensim.buffers.policies import InsertPolicy, bounded_integers
from gensim.buffers.storage import Storage
from gensim.buffers.strata import Strata
from gensim.simulations.base import Sample

_FOLLOW = ("target", "arrivals")


class DistributionAware(InsertPolicy):
    """Capacity balanced across strata of (parameters, time); importance weights in batches on request.

    Each stratum ``s`` has an integer quota, ``capacity * m_s`` rounded by largest remainders
    (so the quotas sum to the capacity and each is within 1 of its exact share), where ``m_s``
    is the stratum's target mass. While the buffer fills, every arrival is stored. Once it is
    full, an arrival in stratum ``s``

    - below its quota evicts a uniformly chosen sample of the stratum furthest above its quota
      (one always exists: counts and quotas both sum to the capacity);
    - at or above its quota replaces a uniformly chosen sample of its own stratum with
      probability ``n_s / a_s`` (``n_s`` stored, ``a_s`` arrived there so far), and is
      discarded otherwise: a reservoir inside the stratum, so its content stays a uniform
      subset of everything that arrived there, early time steps and early simulations included.

    So every stratum that keeps receiving arrivals converges to exactly its quota, whatever the
    arrival order; capacity a stratum cannot use yet is lent to the others and taken back as its
    arrivals come. The quotas are fixed: quotas that move (fractional ones, or shares of the
    arrivals so far) keep making strata "below quota", and a stratum below quota stores every
    arrival, which biases the buffer toward the latest simulations (measured in the set-up of
    ``test_no_recency_bias_inside_strata``: 27% of the buffer from the first half of an
    in-order stream instead of 50%).

    Parameters
    ----------
    strata : Strata
        The partition of (parameters, time) and the target mass of each stratum.
    follow : {"target", "arrivals"}, default "target"
        The law ``rho`` the importance weights make the loss follow. ``"target"``: the strata's
        target mass (the design distribution times uniform time steps) at the resolution of the
        quotas, ``quotas / capacity``, whatever the sampler chose. ``"arrivals"``: each stratum's share of all arrivals so far, so that a region an
        adaptive sampler over-samples on purpose weighs more in the loss, while the buffer
        still covers the whole target (and the arrival-order bias, steps in order and
        simulations in waves, stays out of it).
    importance_weights : bool, default False
        Add ``"weight"`` (B,) float32 to every batch: ``rho_s / (n_s / N)`` for a sample of
        stratum ``s`` (``N`` stored in all), scaled so that their mean over the stored samples
        is 1. A loss averaged with these weights is unbiased for ``rho`` at the strata's
        resolution, also while some strata are short of samples. Strata with no sample at all
        cannot be represented; their mass is spread over the others. With ``follow="target"``
        a buffer whose strata hold their quotas has every weight exactly 1: the weights correct
        strata short of their quota, not the rounding of the quotas (within 1 sample of the
        exact share), which would only add gradient noise.

    Notes
    -----
    Each arrival costs one nearest-center search over the cells (cached per parameter vector,
    :meth:`Strata.stratum_of`), one integer draw and, for an arrival below its quota, one
    O(n_strata) vectorized ``argmax`` plus a binary search in the donor's sorted slot list:
    nothing scans the slots. A uniform member of a stratum is the ``k``-th smallest of its
    slots. Below quota, ``k = rng.integers(n_donor)``; at or above it, the one draw
    ``v = rng.integers(a_s)`` decides both: replace member ``v`` if ``v < n_s``, else discard
    (Vitter's algorithm R). That is the law of a keep decision with probability ``n_s / a_s``
    followed by a separate uniform choice of the member: given ``v < n_s``, ``v`` is uniform
    on ``[0, n_s)``, and the draws of different arrivals are independent either way. As every
    arrival takes exactly one draw whose bound the draws do not change, a batch of arrivals is
    drawn in one call (:meth:`select_slots`) with the content of one call per arrival. The
    content depends only on the seed and the arrivals. Batches are uniform draws with
    replacement (:class:`~gensim.buffers.UniformDraw`).
    """

    def __init__(
        self,
        strata: Strata,
        follow: Literal["target", "arrivals"] = "target",
        importance_weights: bool = False,
    ) -> None:
        if not isinstance(strata, Strata):
            raise TypeError(
                f"strata must be a gensim.buffers.Strata, got {type(strata).__name__}; build it "
                "with Strata(space, n_steps) or Strata.from_simulation(simulation)"
            )
        if follow not in _FOLLOW:
            raise ValueError(f"follow must be one of {_FOLLOW}, got {follow!r}")
        self.strata = strata
        self.follow = follow
        self.importance_weights = bool(importance_weights)

    def bind(self, capacity: int, rng: np.random.Generator) -> None:
        """See :meth:`InsertPolicy.bind`; the per-slot strata and the counts start empty."""
        super().bind(capacity, rng)
        self._quotas = _apportion(capacity, self.strata.mass)
        # Stratum of the sample in each slot, -1 for a slot without a live sample.
        self.slot_stratum = np.full(capacity, -1, dtype=np.int64)
        # Per-stratum stored and arrived counts as Python lists: the insert path reads and
        # writes single entries, which costs several times more on numpy arrays.
        self._counts = [0] * self.strata.n_strata
        self._arrivals = [0] * self.strata.n_strata
        self._quota_list = self._quotas.tolist()
        # counts - quotas, kept with the counts: the donor of an arrival below its quota is its
        # argmax (the first stratum furthest above its quota).
        self._excess = -self._quotas
        # The slots of each stratum, ascending: a uniform member is one index into its list,
        # where scanning slot_stratum would cost O(capacity) per eviction. Ascending order makes
        # members[k] the k-th smallest slot, so the same draw k picks the same slot as a scan.
        self._members: list[list[int]] = [[] for _ in range(self.strata.n_strata)]

    @property
    def counts(self) -> np.ndarray:
        """Samples stored in each stratum, shape (n_strata,), int64 (a copy)."""
        return np.array(self._counts, dtype=np.int64)

    @property
    def arrivals(self) -> np.ndarray:
        """Arrivals so far in each stratum, shape (n_strata,), int64 (a copy)."""
        return np.array(self._arrivals, dtype=np.int64)

    # --- the law and its quotas --------------------------------------------------------------

    def law(self) -> np.ndarray:
        """The law over strata the importance weights follow, ``rho``.

        Returns
        -------
        ndarray, shape (n_strata,), float64
            Sums to 1. ``"target"``: ``quotas / capacity``, the target mass rounded to whole
            samples (so a balanced buffer has weights of exactly 1); ``"arrivals"``: each
            stratum's share of the arrivals, the target before any arrival.
        """
        target = self._quotas / self.capacity
        if self.follow == "target":
            return target
        arrivals = self.arrivals
        total = arrivals.sum()
        return arrivals / total if total else target

    def quotas(self) -> np.ndarray:
        """Integer share of the capacity of each stratum, ``capacity * mass`` by largest remainders.

        Returns
        -------
        ndarray, shape (n_strata,), int64
            Sums to the capacity; each entry within 1 of ``capacity * strata.mass[s]``.
        """
        return self._quotas

    # --- insertion ---------------------------------------------------------------------------

    def select_slot(self, sample: Sample, seq: int, storage: Storage) -> int | None:
        """Store while filling, then balance strata as the class describes; see :meth:`InsertPolicy.select_slot`."""
        s = self.strata.stratum_of(sample.params, sample.step)
        free = storage.free_slot()
        if free is None:
            return self._place_full([s])[0]
        self._arrivals[s] += 1
        self._add_member(s, free)
        return free

    def select_slots(self, samples: Sequence[Sample], first_seq: int, storage: Storage) -> list[int | None] | None:
        """:meth:`select_slot` for consecutive arrivals into a full storage; None while it has free slots.

        A full storage stays full through the batch (nothing is released under the buffer's
        lock), so no arrival needs ``storage.free_slot()``; the strata of the batch are found
        once per distinct parameter vector (:meth:`Strata.strata_of`).
        """
        if storage.size < storage.capacity:
            return None
        return self._place_full(
            self.strata.strata_of([sample.params for sample in samples], [sample.step for sample in samples])
        )

    def _place_full(self, strata: list[int]) -> list[int | None]:
        """The slots of consecutive arrivals of ``strata`` into a full storage; updates the bookkeeping.

        Each arrival takes exactly one draw, whose bound does not depend on any draw: an arrival
        below its quota draws a member of the donor (``rng.integers(n_donor)``), one at or above
        it draws ``v = rng.integers(a_s)`` and replaces member ``v`` of its own stratum when
        ``v < n_s``, else is discarded. The counts move only with the first kind (a replacement
        inside a stratum leaves ``n_s`` as it is), so the bounds of the whole batch are known
        before any draw, and :func:`~gensim.buffers.policies.bounded_integers` draws them: the
        same integers, and the same generator state after, as one scalar call per bound in order.

        Parameters
        ----------
        strata : list of int, length n
            Stratum of each arrival, in arrival order.

        Returns
        -------
        list of (int or None), length n
        """
        counts, arrivals, quotas, excess = self._counts, self._arrivals, self._quota_list, self._excess
        # First pass: the counts, arrivals and draw bound of each arrival (donor >= 0: evict
        # from the donor; -1: the reservoir of its own stratum, ``n_s`` recorded in ``kept``).
        donors, bounds, kept = [], [], []
        for s in strata:
            arrivals[s] += 1
            n_s = counts[s]
            if n_s < quotas[s]:
                donor = int(excess.argmax())
                donors.append(donor)
                bounds.append(counts[donor])
                kept.append(0)
                counts[donor] -= 1
                counts[s] = n_s + 1
                excess[donor] -= 1
                excess[s] += 1
            else:
                donors.append(-1)
                bounds.append(arrivals[s])
                kept.append(n_s)
        draws = bounded_integers(self.rng, bounds)
        # Second pass, in arrival order: the slots, from the slot lists as they are then.
        members, slot_stratum = self._members, self.slot_stratum
        slots: list[int | None] = []
        for s, donor, v, n_s in zip(strata, donors, draws, kept):
            if donor >= 0:
                slot = members[donor].pop(v)  # the v-th smallest slot of the donor
                slot_stratum[slot] = s
                bisect.insort(members[s], slot)
            elif v < n_s:
                # v is uniform on [0, n_s) given v < n_s: a uniform member, replaced by the
                # arrival of the same stratum (its slot list and count stay as they are).
                slot = members[s][v]
            else:
                slot = None
            slots.append(slot)
        return slots

    def _add_member(self, s: int, slot: int) -> None:
        """Record a sample of stratum ``s`` in the free ``slot``."""
        self.slot_stratum[slot] = s
        self._counts[s] += 1
        self._excess[s] += 1
        bisect.insort(self._members[s], slot)

    def _forget(self, slot: int) -> None:
        """Remove the live sample of ``slot`` from its stratum's count and slot list."""
        stratum = int(self.slot_stratum[slot])
        members = self._members[stratum]
        del members[bisect.bisect_left(members, slot)]
        self._counts[stratum] -= 1
        self._excess[stratum] -= 1
        self.slot_stratum[slot] = -1

    def released(self, slots: np.ndarray, storage: Storage) -> None:
        """Forget the strata of slots a consuming draw freed; see :meth:`InsertPolicy.released`."""
        for slot in slots.tolist():
            self._forget(slot)

    # --- drawing -----------------------------------------------------------------------------

    def stratum_weights(self) -> np.ndarray:
        """Importance weight of a sample of each stratum (0 for empty strata).

        Returns
        -------
        ndarray, shape (n_strata,), float64
            ``rho_s / (n_s / N)``, scaled to a mean of 1 over the stored samples.
        """
        counts = self.counts
        stored = counts.sum()
        if stored == 0:
            return np.zeros(self.strata.n_strata)
        rho = self.law()
        present = counts > 0
        weights = np.zeros(self.strata.n_strata)
        weights[present] = rho[present] * stored / counts[present]
        # The mean over stored samples is sum of rho over non-empty strata; divide it out.
        return weights / rho[present].sum()

    def batch_weights(self, slots: np.ndarray, storage: Storage) -> np.ndarray | None:
        """The :meth:`stratum_weights` of each drawn sample, or None if weights are off."""
        if not self.importance_weights:
            return None
        return self.stratum_weights()[self.slot_stratum[slots]].astype(np.float32)

    def default_draw_rule(self) -> DrawRule:
        """Uniform with replacement: :class:`~gensim.buffers.draw.UniformDraw`."""
        return UniformDraw()

    # --- checkpointing -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Generator state, per-slot strata, counts, arrivals and the partition's description."""
        return {
            **super().state_dict(),
            "strata": self.strata.describe(),
            "slot_stratum": self.slot_stratum.copy(),
            "counts": self.counts,
            "arrivals": self.arrivals,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the strata must be built as in the saved run."""
        if state["strata"] != self.strata.describe():
            raise ValueError(
                f"checkpoint strata {state['strata']} differ from this policy's "
                f"{self.strata.describe()}; build the policy with the checkpoint's strata settings"
            )
        super().load_state_dict(state)
        self.slot_stratum[:] = state["slot_stratum"]
        self._counts = np.asarray(state["counts"], dtype=np.int64).tolist()
        self._arrivals = np.asarray(state["arrivals"], dtype=np.int64).tolist()
        self._excess = np.asarray(state["counts"], dtype=np.int64) - self._quotas
        # A stable sort of the slots by stratum lists each stratum's slots in ascending order.
        order = np.argsort(self.slot_stratum, kind="stable")
        bounds = np.searchsorted(self.slot_stratum[order], np.arange(self.strata.n_strata + 1))
        self._members = [order[lo:hi].tolist() for lo, hi in itertools.pairwise(bounds)]


def _apportion(total: int, law: np.ndarray) -> np.ndarray:
    """Integers summing to ``total``, each ``floor`` or ``ceil`` of ``total * law`` (largest remainders).

    Parameters
    ----------
    total : int
    law : ndarray, shape (k,)
        Non-negative, sums to 1.

    Returns
    -------
    ndarray, shape (k,), int64
    """
    exact = total * law
    shares = np.floor(exact).astype(np.int64)
    short = total - int(shares.sum())
    # A stable sort breaks ties by index, so the apportionment is deterministic.
    shares[np.argsort(shares - exact, kind="stable")[:short]] += 1
    return shares
