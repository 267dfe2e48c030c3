"""Measure what a SIGKILL and resume cost on the tiny study of tests/gensim/resume_study.py.

Runs ``n`` uninterrupted studies and ``n`` studies killed (SIGKILL) after their checkpoint of
step >= 50 then resumed, and prints the final held-out relative L2 of each, their means and
spreads, and what the resumed studies ran again. Run from the repository root:

    python reports/resume/measure.py 4 > reports/resume/measure.txt
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path[:0] = ["tests", "tests/gensim"]
import resume_study as rs  # noqa: E402


def main(n: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="gensim-resume-"))
    full, resumed = [], []
    try:
        for i in range(n):
            t = time.perf_counter()
            m = rs.run_study(root / f"full{i}")
            full.append(m["val_rel_l2_mean"])
            print(
                f"uninterrupted {i}: val_rel_l2_mean {full[-1]:.5f}, {m['simulations_finished']} simulations "
                f"finished ({time.perf_counter() - t:.0f} s)",
                flush=True,
            )
        for i in range(n):
            t = time.perf_counter()
            run_dir = root / f"killed{i}"
            k = rs.kill_after_checkpoint(run_dir)
            time.sleep(max(0.0, k["killed_at"] + 10 - time.monotonic()))
            alive_10s = len(rs.alive(k["workers"]))
            for p in k["workers"]:  # do not let them compete with the resumed study
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            interrupted = len(rs.in_flight(k["ckpt"]))
            rc, out = rs.resume(run_dir)
            assert rc == 0, out[-3000:]
            m = json.loads((run_dir / "metrics.json").read_text())
            resumed.append(m["val_rel_l2_mean"])
            print(
                f"killed+resumed {i}: killed at step {k['ckpt']['global_step']}, {interrupted} simulations "
                f"interrupted, workers alive 10 s after the kill {alive_10s}/{len(k['workers'])}; "
                f"val_rel_l2_mean {resumed[-1]:.5f}, resumed run received {m['samples_received']} samples, "
                f"{m['simulations_finished']} simulations finished in all "
                f"({time.perf_counter() - t:.0f} s)",
                flush=True,
            )
        for name, xs in (("uninterrupted", full), ("killed+resumed", resumed)):
            sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
            print(
                f"{name}: mean {statistics.mean(xs):.5f}, sd {sd:.5f} ({100 * sd / statistics.mean(xs):.1f}%), "
                f"min {min(xs):.5f}, max {max(xs):.5f}"
            )
        ratio = statistics.mean(resumed) / statistics.mean(full)
        print(f"mean(resumed) / mean(uninterrupted) = {ratio:.3f}")
        # What the 10% test would see of a resume that lost half of the training (e.g. a model
        # restarted from scratch at a kill at mid-study): a study of half the steps.
        half = rs.MAX_STEPS // 2
        m = rs.run_study(root / "half", f"trainer.max_steps={half}")
        print(
            f"uninterrupted, {half} steps instead of {rs.MAX_STEPS}: val_rel_l2_mean {m['val_rel_l2_mean']:.5f} "
            f"({m['val_rel_l2_mean'] / statistics.mean(full):.2f} x the {rs.MAX_STEPS}-step mean)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
