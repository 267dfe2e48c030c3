"""Committed run outputs stay lean, and each committed study keeps its trace (metrics + resolved config).

Under ``reports/*/runs/`` a study keeps its ``metrics.json``, its resolved config
(``.hydra/config.yaml``) and what a report script reads back (reports/.gitignore lists them);
Hydra's own settings, Lightning's hparams, checkpoints, npz arrays other than gensim-report's
``cases.npz`` and logs other than ``logs/metrics.csv`` are not committed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Run outputs that no reader needs (matched against paths relative to the repository).
DROPPED = re.compile(
    r"reports/.+/runs/.*(/\.hydra/hydra\.yaml|/logs/hparams\.yaml|\.ckpt|/train\.log"
    r"|/workers/.*\.log)$"
)
#: npz arrays a report reads back: gensim-report's figure cases.
KEPT_NPZ = re.compile(r"reports/.+/runs/.*/cases\.npz$")


def tracked_reports() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the committed files cannot be listed")
    out = subprocess.run(["git", "ls-files", "reports"], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_no_run_output_that_no_reader_needs_is_committed():
    files = tracked_reports()
    dropped = [f for f in files if DROPPED.search(f) or (f.endswith(".npz") and not KEPT_NPZ.search(f))]
    assert not dropped, f"{len(dropped)} run outputs nobody reads are committed (see reports/.gitignore): {dropped[:5]}"


def test_every_committed_study_keeps_its_metrics_and_resolved_config():
    files = set(tracked_reports())
    studies = {f.rsplit("/.hydra/", 1)[0] for f in files if "/.hydra/" in f}
    assert studies, "no committed study found under reports/: the check would be empty"
    missing = [s for s in sorted(studies) if f"{s}/metrics.json" not in files or f"{s}/.hydra/config.yaml" not in files]
    assert not missing, f"committed studies without metrics.json or .hydra/config.yaml: {missing[:5]}"
