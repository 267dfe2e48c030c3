"""A uniform sample of the training rows seen so far, to measure the training error on.

The training error tells under-training from a lack of data: a model whose error on the rows
it trained on is about its held-out error has not fitted its data yet (train longer), one whose
training error is far below its held-out error needs more data (or regularization).
"""

from __future__ import annotations

import numpy as np
import torch


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection of uint64 whose output bits all depend on every input bit."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _words(column: torch.Tensor) -> np.ndarray:
    """The bits of a column (B,) or (B, k) as uint64 words (B, k): floats as float32, integers as int64."""
    a = torch.as_tensor(column).detach().cpu().numpy().reshape(len(column), -1)
    a = a.astype(np.float32).view(np.uint32) if a.dtype.kind == "f" else a.astype(np.int64).view(np.uint64)
    return a.astype(np.uint64)


def row_keys(batch: dict[str, torch.Tensor]) -> np.ndarray:
    """One uint64 key per row, the same whenever the same training row is drawn again.

    Rows of the stream carry their ``sim_id`` and ``step`` (kept on the host: reading them waits
    for no device); rows without them (an off-line dataset) are keyed by the bytes of their
    parameters and time.

    Parameters
    ----------
    batch : dict
        ``sim_id`` (B,) and ``step`` (B,), or ``params`` (B, P) and ``t`` (B,).

    Returns
    -------
    ndarray, shape (B,), uint64
    """
    if "sim_id" in batch and "step" in batch:
        columns = [batch["sim_id"], batch["step"]]
    else:
        columns = [batch["params"], batch["t"]]
    words = np.concatenate([_words(c) for c in columns], axis=1)
    h = np.zeros(words.shape[0], np.uint64)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps, as the hash means it to
        for column in words.T:
            h = _mix(h ^ column)
    return h


class TrainingProbe:
    """A bottom-k sample of the distinct training rows seen: each row is kept when its key's hash
    is among the ``capacity`` smallest so far.

    Every distinct row seen has the same chance to be in the sample however often the replay
    buffer drew it, and a row drawn again changes nothing (its hash is the same), so the sample
    is a uniform one of the rows trained on so far, deterministic given them. It covers the whole
    stream as data arrive: new rows replace sampled ones with probability ``capacity / seen``.
    Checking a batch costs one hash and comparison per row (against the largest hash kept, once
    the sample is full; a set lookup for the few rows below it); a row is copied (from the device)
    only when it enters the sample, into the slot of the row it evicts, about
    ``capacity * ln(seen / capacity)`` times in a study.

    Not part of a checkpoint: a resumed study samples again from the batches it draws.

    Parameters
    ----------
    capacity : int
        Rows kept.

    Attributes
    ----------
    hashes : ndarray, shape (n,), uint64
        The hash of the row in each slot (in no particular order); ``n <= capacity``.
    rows : dict of Tensor
        ``params`` (n, P), ``t`` (n,), ``fields`` (n, D) on the host, slot by slot.
    """

    keys = ("params", "t", "fields")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a training probe needs capacity >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.hashes = np.zeros(0, np.uint64)
        self.rows: dict[str, torch.Tensor] = {}
        self._storage: dict[str, torch.Tensor] = {}  # capacity rows, the first n in use
        self._members: set[int] = set()  # the hashes kept, for membership tests
        self._largest = np.uint64(0)  # the largest hash kept, once the sample is full

    def __len__(self) -> int:
        return len(self.hashes)

    @torch.no_grad()
    def offer(self, batch: dict[str, torch.Tensor]) -> int:
        """Take the batch rows that belong to the sample.

        Parameters
        ----------
        batch : dict
            A training batch (see :func:`row_keys` for the keys it needs, and :attr:`keys`).

        Returns
        -------
        int
            Rows that entered the sample.
        """
        h = row_keys(batch)
        n = len(self.hashes)
        # Once the sample is full only rows below its largest hash can enter: after the first
        # few hundred steps that is a handful per batch, so the set lookups and the sort below
        # run on a handful (a sort of the whole sample at every step cost about 1 ms a step).
        candidates = np.flatnonzero(h < self._largest) if n >= self.capacity else np.arange(h.size)
        # Rows not in the sample yet; a row drawn twice in one batch enters once (its first draw).
        first: dict[int, int] = {}
        for i, key in zip(candidates.tolist(), h[candidates].tolist()):
            if key not in self._members and key not in first:
                first[key] = i
        if not first:
            return 0
        candidates = np.fromiter(first.values(), np.int64, len(first))
        candidates = candidates[np.argsort(h[candidates], kind="stable")]
        # The capacity smallest of the sample and the candidates: which candidates enter, and
        # (once full) which slots they take, those of the largest hashes in the sample.
        merged = np.concatenate([self.hashes, h[candidates]])
        kept = np.argsort(merged, kind="stable")[: self.capacity]
        entering = candidates[np.sort(kept[kept >= n]) - n]
        free = np.arange(n, min(n + entering.size, self.capacity))
        stays = np.zeros(n, bool)
        stays[kept[kept < n]] = True
        evicted = np.flatnonzero(~stays)
        slots = np.concatenate([free, evicted])[: entering.size]
        index = torch.from_numpy(entering)
        for k in self.keys:
            taken = batch[k][index.to(batch[k].device)].detach().cpu()
            if k not in self._storage:
                self._storage[k] = taken.new_zeros((self.capacity, *taken.shape[1:]))
            self._storage[k][torch.from_numpy(slots)] = taken
        hashes = np.concatenate([self.hashes, np.zeros(free.size, np.uint64)])
        self._members.difference_update(hashes[slots[free.size :]].tolist())  # the evicted rows' hashes
        hashes[slots] = h[entering]
        self._members.update(h[entering].tolist())
        self.hashes = hashes
        if len(hashes) >= self.capacity:
            self._largest = hashes.max()
        self.rows = {k: v[: len(hashes)] for k, v in self._storage.items()}
        return int(entering.size)
