"""The sampling package stands alone: importing it loads no torch, lightning nor gensim."""

import subprocess
import sys

FORBIDDEN = ("torch", "lightning", "lightning_fabric", "pytorch_lightning", "gensim")


def loaded_forbidden(module):
    code = f"import {module}, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_sampling_imports_no_torch_lightning_or_gensim():
    assert loaded_forbidden("sampling") == "[]"


def test_the_check_detects_a_forbidden_module():
    # Control: the same probe sees gensim when it is imported, so an empty list above means something.
    assert "'gensim'" in loaded_forbidden("gensim")
