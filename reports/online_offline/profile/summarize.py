"""Summaries of the profile and the timed studies of ../README.md ("Where the time went"): profile.json.

    python reports/online_offline/profile/summarize.py --src <folder of the py-spy profiles>

Inputs: in ``--src`` (not committed, 3 to 4 MB each), ``online.raw`` and ``online_wake20.raw``,
py-spy profiles of the on-line study (``py-spy record --subprocesses --threads --nonblocking -r 50
-f raw -o <file> -- python -m gensim.train <SETTING>``) with ``transport.wake_interval_s=0`` (the
receive loop before the change; the profile was taken before the option existed) and with the
default 0.02; beside this file: the study runs ``runs/*/`` (``metrics.json``,
``logs/metrics.csv``, ``simulations.json``), ``timers.json`` (``timed_train.py``) and
``send_bench.json`` (``send_bench.py``'s output).
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import re
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RATE = 50.0  # py-spy samples per second
TARGET = 0.004147  # the off-line final held-out error of seed 0 (../plate_heat_n768_quiet)
SETTING = (
    "simulation=plate_heat model=pod launcher.max_simulations=768 launcher.n_parallel=1 trainer.max_steps=6000 "
    "data.steps_per_epoch=250 seed=0 model.param_linear=true simulation.substeps=12 buffer.capacity=38400"
)
#: Per thread, the categories of a sample: the first pattern its stack matches.
CATEGORIES = {
    "training thread": [
        ("checkpoint saves (buffer copy, torch.save)", "on_save_checkpoint|save_checkpoint"),
        ("TrainingProbe.offer (the training-error sample; both pipelines)", "TrainingProbe"),
        ("buffer draws", "BufferStream|ReplayBuffer.sample"),
        ("optimizer steps (forward, backward, Adam)", "backward|Adam.step|optimizer.py|training_step"),
        ("validation", "validation_step|evaluation_loop"),
        ("start-up (imports, setup, the held-out wait)", "_find_and_load|setup|_call_setup_hook"),
    ],
    "receive thread": [
        ("recv (the socket; the wait for the interpreter lock)", "_recv_message"),
        ("sink (buffer insert)", "_dispatch"),
        ("checks and tags", "_validate|_batch_tags|_tags_of"),
    ],
    "simulation worker": [
        ("the solver (PlateHeat.run)", "PlateHeat.run|theta_scheme_heat|p1_matrices"),
        ("Client.send (tag, frames, ZeroMQ)", "Client.send|Client._send_frames"),
        ("start-up (imports, the simulation's build)", "_find_and_load|_build_simulation"),
    ],
}


def thread_of(first_frames: str) -> str:
    if "gensim.launch.worker" in first_frames:
        return "simulation worker"
    if "MainThread" in first_frames:
        return "training thread"
    if re.search(r"gensim-receiver$", first_frames):
        return "receive thread"
    return re.sub(r"thread \(\d+\): ", "", first_frames.split(";")[-1])


def profile(raw: Path) -> dict:
    """Seconds of active samples per thread, and per category for the three threads of CATEGORIES."""
    threads, split = collections.Counter(), {k: collections.Counter() for k in CATEGORIES}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        thread = thread_of(";".join(frames[:2]))
        threads[thread] += int(n)
        if thread in CATEGORIES:
            name = next((c for c, pattern in CATEGORIES[thread] if re.search(pattern, stack)), "other")
            split[thread][name] += int(n)
    seconds = {k: round(v / RATE, 1) for k, v in threads.most_common() if v >= 10}
    return {"threads": seconds} | {k: {c: round(v / RATE, 1) for c, v in s.most_common()} for k, s in split.items()}


def study(run: Path) -> dict:
    """Pseudo-epoch times, simulation times and the time to TARGET of one study run."""
    with open(run / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("elapsed_s") and r.get("val_rel_l2_mean")]
    elapsed = np.array([float(r["elapsed_s"]) for r in rows])
    errors = np.array([float(r["val_rel_l2_mean"]) for r in rows])
    epochs = np.diff(elapsed)
    sims = json.loads((run / "simulations.json").read_text())
    seconds = np.array([s["seconds"] for s in sims if s["purpose"] == "train" and s["state"] == "done"])
    hit = np.flatnonzero(errors <= TARGET)
    return {
        "first_validation_s": round(float(elapsed[0]), 2),
        "pseudo_epoch_s_steps_250_to_3000": [round(float(x), 2) for x in epochs[:11]],
        "pseudo_epoch_s_mean_steps_250_to_3000": round(float(epochs[:11].mean()), 2),
        "pseudo_epoch_s_mean_after_3000": round(float(epochs[11:].mean()), 2),
        "train_simulation_s_mean": round(float(seconds.mean()), 4),
        "train_simulation_s_median": round(float(np.median(seconds)), 4),
        "time_to_target_s": round(float(elapsed[hit[0]]), 1) if hit.size else None,
        "steps_to_target": int(rows[hit[0]]["step"]) + 1 if hit.size else None,
        "wall_s": round(json.loads((run / "metrics.json").read_text())["wall_s"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, required=True, help="folder of online.raw and online_wake20.raw")
    src = parser.parse_args().src
    runs = {
        "before the change (the old receive loop), checkpoint triggers null (load 2.7 -> 3.9)": "nockpt",
        "wake_interval_s=0, checkpoint triggers null (load 4.1 -> 3.6)": "wake0",
        "wake_interval_s=0.02, checkpoint triggers null (load 3.3 -> 4.4)": "wake20",
        "wake_interval_s=0.02, default checkpoints, with timed_train.py (load 5.0 -> 6.0)": "timed",
    }
    out = {
        "setting": f"gensim-train {SETTING}, OMP_NUM_THREADS=1, 2 cores shared with other users' jobs",
        "target": TARGET,
        "py_spy": {
            "units": "seconds of samples (50 Hz) in which a thread was active, over the whole 6000-step study",
            "before: wake_interval_s=0 (online.raw)": profile(src / "online.raw"),
            "after: wake_interval_s=0.02 (online_wake20.raw)": profile(src / "online_wake20.raw"),
        },
        "studies (no profiler; runs/)": {
            "note": "checkpoint triggers null: checkpoint.every_n_steps=null checkpoint.every_minutes=null, which "
            "before the fix in checkpoint_callbacks still saved (with the buffer) at every 250-step pseudo-epoch "
            "end, through Lightning's default ModelCheckpoint; the same in the three runs compared",
            **{label: study(HERE / "runs" / name) for label, name in runs.items()},
        },
        "timers (timed_train.py, wake_interval_s=0.02, default checkpoints: runs/timed)": json.loads(
            (HERE / "timers.json").read_text()
        ),
        "send_bench": json.loads((HERE / "send_bench.json").read_text()),
    }
    (HERE / "profile.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
