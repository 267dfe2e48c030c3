"""Acceptance of issue 12, simulation faults: a study under random SIGKILLs and a hang completes,
with every faulted simulation retried and every (simulation, step) in the buffer exactly once.

The faults are injected by a test-only simulation (``faulty.InjectedFaults``), not by any
production code path: each attempt kills its own worker with SIGKILL with probability 0.2, before
a seeded random step, and one simulation hangs on its first attempt. The decisions depend only on
(fault seed, simulation seed, attempt number), so the fault pattern is the same at every run.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from launcher_contract import OneRankRouter, wait_until

from gensim.buffers import ReplayBuffer, Reservoir
from gensim.data import ValidationStore
from gensim.launch import Launcher, LocalExecutor
from gensim.simulations import DecayingWave
from gensim.transport import wire
from gensim.transport.receiver import BatchSink, Receiver
from sampling import Sobol

HERE = Path(__file__).parent
N_STEPS = 10
N_TRAIN = 24
N_HELDOUT = 4
STUDY_SEED = 7
P_KILL = 0.2
#: With this seed, 7 of the study's 36 attempts are killed (19%), one simulation three times
#: in a row (it succeeds at its 4th and last allowed attempt).
FAULT_SEED = 5


@pytest.fixture
def faulty_on_path(monkeypatch):
    """Workers import ``faulty`` (the fault-injecting simulations) from this folder."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))


def decisions_of(state_dir: Path) -> dict[tuple[int, int], str]:
    """What ``InjectedFaults`` decided for each (seed, attempt): ``ok``, ``kill <step>`` or ``hang``."""
    out = {}
    for path in state_dir.iterdir():
        if path.suffix != ".n":  # the decision files, not the attempt counters
            seed, attempt = path.name.split(".")
            out[int(seed), int(attempt)] = path.read_text()
    return out


@pytest.mark.usefixtures("faulty_on_path")
def test_a_study_with_random_sigkills_and_a_hang_completes_without_loss_or_duplicate(tmp_path):
    sim = DecayingWave(size=8, n_steps=N_STEPS)
    state = tmp_path / "faults"
    state.mkdir()
    # The 4th training simulation (created after the held-out ones) hangs on its first attempt.
    hang_seed = STUDY_SEED * 1_000_003 + N_HELDOUT + 3
    config = {
        "_target_": "faulty.InjectedFaults",
        "size": 8,
        "n_steps": N_STEPS,
        "state_dir": str(state),
        "p_kill": P_KILL,
        "fault_seed": FAULT_SEED,
        "hang_seed": hang_seed,
    }
    token = os.urandom(wire.KEY_BYTES)
    # Room for every sample: what the buffer holds is what it received.
    buffer = ReplayBuffer(capacity=4 * N_TRAIN * N_STEPS, fields=sim.fields, n_params=sim.space.dim, policy=Reservoir())
    heldout = ValidationStore(sim, N_HELDOUT)
    receiver = Receiver(sim.fields, token).start()
    router = OneRankRouter(receiver, {"train": BatchSink(buffer.add, buffer.add_many), "validation": heldout.add})
    # 3 s without a step is a hang here (a step takes microseconds); 3 retries make a simulation
    # that fails all its attempts unlikely (0.2**4 per simulation) and, faults being seeded, absent.
    launcher = Launcher(
        config,
        LocalExecutor(stop_grace_s=1.0),
        n_parallel=2,
        max_simulations=N_TRAIN,
        max_retries=3,
        simulation_timeout_s=3.0,
        log_dir=str(tmp_path / "workers"),
    )
    try:
        val_ids = launcher.submit(Sobol(sim.space, seed=99).sample(N_HELDOUT), purpose="validation")
        heldout.expect(val_ids)
        launcher.start(router, Sobol(sim.space, seed=1), token, seed=STUDY_SEED)
        records = launcher.ledger.records
        assert wait_until(lambda: launcher.exhausted, 240), launcher.counts()
        # Every END in: the samples before it are in their sinks.
        assert receiver.wait_finished(list(records), 30), set(records) - receiver.stats().finished
    finally:
        launcher.shutdown()
        receiver.stop()

    records = list(launcher.ledger.records.values())
    assert launcher.error is None
    assert len(records) == N_HELDOUT + N_TRAIN and all(r.state == "done" for r in records)

    # The injected faults: about P_KILL of the attempts killed (seeded: the same at every run),
    # and the hang.
    decisions = decisions_of(state)
    kills = [k for k, d in decisions.items() if d.startswith("kill")]
    hangs = [k for k, d in decisions.items() if d == "hang"]
    assert hangs == [(hang_seed, 0)]
    assert 0.15 <= len(kills) / len(decisions) <= 0.25, (len(kills), len(decisions))

    print(
        f"\n{len(decisions)} attempts: {len(kills)} killed with SIGKILL, {len(hangs)} hung; "
        f"{len(records)} simulations done"
    )

    # Every attempt is in the ledger; every faulted one failed as it was faulted and was
    # retried with the same id, parameters and seed (one record, several attempts).
    by_seed = {r.seed: r for r in records}
    assert sum(len(r.attempts) for r in records) == len(decisions)
    for (seed, k), decision in decisions.items():
        attempt, record = by_seed[seed].attempts[k], by_seed[seed]
        if decision == "ok":
            assert attempt.state == "done" and attempt.steps == N_STEPS and k == len(record.attempts) - 1
            continue
        assert attempt.state == "failed" and attempt.signal == "SIGKILL", attempt
        assert attempt.timed_out == (decision == "hang")
        assert len(record.attempts) > k + 1, f"faulted attempt {k} of {record.sim_id} was not retried"

    # The held-out set: every simulation complete, every value the solver's.
    assert heldout.complete() == val_ids
    tensors = heldout.tensors()
    params = np.asarray([r.params for r in records[:N_HELDOUT]])  # the ledger is in creation order
    expected_fields = np.stack([sim.exact(p, t) for p in params for t in sim.times])
    np.testing.assert_allclose(tensors["fields"].numpy(), expected_fields, rtol=1e-6)

    # The buffer holds each (simulation, step) of every training simulation exactly once.
    contents = buffer.contents()
    pairs = list(zip(contents["sim_id"].tolist(), contents["step"].tolist()))
    expected = {(r.sim_id, s) for r in records if r.purpose == "train" for s in range(N_STEPS)}
    assert set(pairs) == expected
    # A retry resends the steps its failed attempts sent: the receiver must drop those
    # (issue 12 item 2: duplicate (simulation, step) messages are rejected).
    duplicates = len(pairs) - len(set(pairs))
    assert duplicates == 0, f"{duplicates} duplicate (simulation, step) samples in the buffer"
    # The receiver accepted exactly the expected samples, held-out ones included.
    assert receiver.stats().accepted == (N_TRAIN + N_HELDOUT) * N_STEPS
