"""``gensim-train`` with timers around the checkpoint saves and the training-probe offers.

    TIMES_OUT=timers.json OMP_NUM_THREADS=1 python reports/online_offline/profile/timed_train.py <overrides>

Writes, at exit, per timed function: calls, wall and CPU seconds (this thread's), and each call's
wall time when there are fewer than 50 calls.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import sys
import time

import lightning.pytorch.trainer.trainer as lightning_trainer

from gensim.callbacks import checkpointing
from gensim.models import training_probe
from gensim.train import main

TIMES: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)


def timed(cls: type, name: str, key: str) -> None:
    """Replace ``cls.name`` by a wrapper that records (wall, thread CPU) seconds per call under ``key``."""
    original = getattr(cls, name)

    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            TIMES[key].append((time.perf_counter() - wall, time.thread_time() - cpu))

    setattr(cls, name, wrapper)


@atexit.register
def dump() -> None:
    out = {
        key: {
            "n": len(calls),
            "wall_s": sum(c[0] for c in calls),
            "cpu_s": sum(c[1] for c in calls),
            "each_wall": [round(c[0], 4) for c in calls] if len(calls) < 50 else None,
        }
        for key, calls in TIMES.items()
    }
    with open(os.environ["TIMES_OUT"], "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    timed(checkpointing.StudyCheckpoint, "on_save_checkpoint", "study_ckpt")
    timed(lightning_trainer.Trainer, "save_checkpoint", "trainer_save_checkpoint")
    timed(training_probe.TrainingProbe, "offer", "probe")
    sys.argv[0] = "gensim-train"
    main()
