"""The comparison harness's bookkeeping: tables traced to run directories, finished and cached studies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gensim.compare import StudyResult, cached_study, finished_studies, markdown_table, paired_ratio


def _study(root: Path, variant: str, seed: int, metrics: dict) -> Path:
    run_dir = root / variant / f"seed{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def test_markdown_table_averages_over_seeds_and_names_its_runs(tmp_path):
    results = [
        StudyResult("a", 0, tmp_path / "a/seed0", {"err": 1.0}),
        StudyResult("a", 1, tmp_path / "a/seed1", {"err": 3.0}),
        StudyResult("b", 0, tmp_path / "b/seed0", {"other": 5.0}),
    ]
    lines = markdown_table(results, {"err": "error"}, fmt=".3g", relative_to=tmp_path).splitlines()
    assert lines[0] == "| variant | seeds | error | runs (metrics.json) |"
    # Mean 2 and sample std sqrt(2) over the two seeds; a missing metric is "n/a".
    assert lines[2] == "| a | 2 | 2 ± 1.41 | a/seed0, a/seed1 |"
    assert lines[3] == "| b | 1 | n/a | b/seed0 |"


def test_finished_studies_reads_what_exists_in_variant_order(tmp_path):
    _study(tmp_path, "b", 0, {"err": 2.0})
    _study(tmp_path, "a", 1, {"err": 1.0})
    (tmp_path / "a" / "seed0").mkdir(parents=True)  # started, never finished: no metrics.json
    found = finished_studies(tmp_path, ["a", "b", "c"], [0, 1])
    assert [(r.variant, r.seed, r.metrics["err"]) for r in found] == [("a", 1, 1.0), ("b", 0, 2.0)]
    assert found[0].run_dir == tmp_path / "a" / "seed1"


def test_cached_study_computes_once_and_writes_metrics_last(tmp_path):
    calls = []

    def compute(run_dir: Path) -> dict:
        calls.append(run_dir)
        (run_dir / "extra.txt").write_text("written by the study")
        return {"err": 0.5}

    run_dir = tmp_path / "study"
    assert cached_study(run_dir, compute) == {"err": 0.5}
    assert cached_study(run_dir, compute) == {"err": 0.5}  # read back, not computed again
    assert calls == [run_dir]
    assert json.loads((run_dir / "metrics.json").read_text()) == {"err": 0.5}
    assert not (run_dir / "metrics.tmp").exists()


def test_cached_study_that_fails_leaves_no_metrics(tmp_path):
    def compute(run_dir: Path) -> dict:
        raise RuntimeError("the fit diverged")

    run_dir = tmp_path / "study"
    with pytest.raises(RuntimeError, match="diverged"):
        cached_study(run_dir, compute)
    assert not (run_dir / "metrics.json").exists()  # so a resumed comparison computes it again


def test_paired_ratio_pairs_by_seed(tmp_path):
    results = [
        StudyResult("base", 0, tmp_path, {"p99": 2.0}),
        StudyResult("base", 1, tmp_path, {"p99": 4.0}),
        StudyResult("base", 2, tmp_path, {"p99": 1.0}),
        StudyResult("new", 0, tmp_path, {"p99": 1.0}),
        StudyResult("new", 1, tmp_path, {"p99": 6.0}),
    ]
    out = paired_ratio(results, "p99", "new", "base")
    # Seed 2 has no "new" study: it is left out, not compared with another seed.
    assert out["ratios"] == [0.5, 1.5]
    assert out["n"] == 2 and out["lower"] == 1
    assert out["mean"] == pytest.approx(1.0)
    assert out["se"] == pytest.approx(0.5)  # sample std 1/sqrt(2) over sqrt(2)
    with pytest.raises(ValueError, match="no seed has both"):
        paired_ratio(results, "p99", "new", "missing")
