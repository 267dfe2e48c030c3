"""Launcher.check_streams: simulations that ended well but whose steps the trainer never took."""

from __future__ import annotations

import numpy as np

from gensim.launch import Launcher, LocalExecutor


def launcher_with(n: int) -> tuple[Launcher, list[int]]:
    """A launcher (never started) whose ``n`` simulations all reported done."""
    launcher = Launcher({"_target_": "unused"}, LocalExecutor(), n_parallel=1, max_simulations=0)
    ids = launcher.submit(np.ones((n, 2)), purpose="train")
    for sim_id in ids:
        launcher.ledger.records[sim_id].state = "done"
    return launcher, ids


def rank(accepted=None, finished=(), rejected=None, details=None) -> dict:
    return {
        "accepted_per_sim": accepted or {},
        "finished": list(finished),
        "rejected_per_sim": rejected or {},
        "rejection_details": details or {},
    }


def test_only_simulations_with_evidence_of_nothing_accepted_fail() -> None:
    launcher, (ok, rejected, silent_end, in_flight, earlier) = launcher_with(5)
    # Two ranks: `rejected` streamed to rank 1, the others to rank 0; `earlier` ran before a resume.
    failed = launcher.check_streams(
        [
            rank(
                {ok: 10, silent_end: 0, in_flight: 0},
                finished=[ok, silent_end],
                rejected={ok: {"duplicate": 2}},
                details={ok: "[duplicate] step 3 ..."},
            ),
            rank(
                {rejected: 0},
                rejected={rejected: {"dtype": 9, "auth": 1}},
                details={rejected: "[auth] authentication tag does not match"},
            ),
        ]
    )
    records = launcher.ledger.records
    assert [r.sim_id for r in failed] == [rejected, silent_end]
    assert records[rejected].state == "failed" and records[rejected].error == (
        "all 10 message(s) it sent were rejected by the trainer (auth: 1, dtype: 9); first: "
        "[auth] authentication tag does not match"
    )
    assert records[silent_end].error == "it sent END but no time step reached the trainer"
    # Partial rejections are recorded without failing; no evidence (no END yet, nothing
    # rejected: its messages may still be queued) and records of a run before a resume are left.
    assert records[ok].state == "done" and records[ok].rejected == {"duplicate": 2}
    assert records[in_flight].state == "done" and records[earlier].state == "done"
    assert launcher.counts("train")["failed"] == 2
