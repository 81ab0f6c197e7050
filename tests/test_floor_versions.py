"""The oldest versions pyproject promises, installed in a fresh environment: `import
wce_jax` works and a smoke subset of the goldens passes there (see pyproject.toml,
[tool.wce.floor-test], for exactly what this proves). Slow: it creates a venv and
installs from PyPI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOOR = ["jax[cpu]==0.6.2", "numpy==1.26.4", "ml_dtypes", "pip"]
SMOKE = ["--case", "ce-weighted-mean", "--case", "ce-ignore-some", "--case", "bcel-",
         "--case", "ce-error-", "--case", "ce-warn-"]


@pytest.mark.slow
def test_floor_versions_import_and_pass_a_smoke_subset(tmp_path):
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    py = str(env / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", *FLOOR], check=True, timeout=1200)
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(ROOT)], check=True,
                   timeout=600)
    version = subprocess.run([py, "-c", "import jax, numpy, wce_jax; "
                              "print(jax.__version__, numpy.__version__)"],
                             cwd=tmp_path, capture_output=True, text=True)
    assert version.returncode == 0, version.stderr
    assert version.stdout.split() == ["0.6.2", "1.26.4"]
    run = subprocess.run([py, "-m", "conformance", "run", "--impl", "reference", "--impl",
                          "wce_jax", "--jobs", "1", *SMOKE], cwd=tmp_path,
                         capture_output=True, text=True, timeout=1800,
                         env={"PATH": "/usr/bin:/bin", "WCE_JAX_CACHE": "off",
                              "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert " 0 failed" in run.stdout
