"""The API for users' own test suites: assert_conforms, the pytest fixture, make_case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import conformance
from conformance import golden, runner
from conformance.__main__ import main

ROOT = Path(__file__).resolve().parents[1]

# A user's module: a right weighted cross-entropy, and the classic mistake of dividing
# the weighted sum by the number of elements instead of the sum of their weights.
USER_LOSSES = '''
from wce_torch import cross_entropy as right


def mean_over_n(input, target, weight=None, reduction="mean", **options):
    if reduction != "mean" or target.is_floating_point():
        return right(input, target, weight=weight, reduction=reduction, **options)
    losses = right(input, target, weight=weight, reduction="none", **options)
    return losses.sum() / max(losses.numel(), 1)
'''

# The README's five lines.
README_TEST = '''
from user_losses import {name} as my_cross_entropy

def test_my_loss_conforms(assert_conforms):
    assert_conforms(my_cross_entropy, loss="cross_entropy", framework="torch",
                    dtypes=["float64"])
'''


def _pytest(tmp_path, name):
    (tmp_path / "user_losses.py").write_text(USER_LOSSES)
    (tmp_path / "test_user.py").write_text(README_TEST.format(name=name))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]))
    # pytest alone: the plugin comes from wce's pytest11 entry point, as in a user's repo
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-q",
         "test_user.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_readme_test_file_passes_for_a_right_loss(tmp_path):
    result = _pytest(tmp_path, "right")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_readme_test_file_fails_readably_for_mean_over_n(tmp_path):
    result = _pytest(tmp_path, "mean_over_n")
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "does not conform to the spec's cross_entropy" in out
    # each failing case is listed with the clause it breaks and the error
    line = next(l for l in out.splitlines() if "ce-weighted-mean-n8-c5 [float64]" in l)
    assert "CE-MEAN" in line
    assert "> atol" in out


def test_pyproject_registers_the_plugin():
    text = (ROOT / "pyproject.toml").read_text()
    assert '[project.entry-points.pytest11]' in text
    assert 'wce_conformance = "conformance.pytest_plugin"' in text


def test_assert_conforms_returns_the_records_of_a_conforming_function():
    import torch.nn.functional as F

    records = conformance.assert_conforms(F.nll_loss, loss="nll_loss", framework="torch",
                                          dtypes=["float64"])
    assert records and {r.status for r in records} <= {runner.PASS, runner.DEVIATES,
                                                       runner.NA}
    assert any(r.status == runner.DEVIATES for r in records)  # torch's documented ones


def test_make_case_round_trips_through_a_file_and_the_cli(tmp_path, capsys):
    import wce_torch

    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 3, 1, -100, 2, 3])
    w = np.array([1.0, 2.0, 0.5, 4.0], np.float32)
    case = conformance.make_case("cross_entropy", x, y, weight=w, label_smoothing=0.1,
                                 id="my-training-config")
    assert case.dtypes[:2] == ["float64", "float32"]  # float32 inputs are exact there
    path = tmp_path / "mine.json"
    from conformance import make

    make.write_cases(path, [case])
    (loaded,) = golden.load_file(path)
    assert loaded.to_json() == case.to_json()
    conformance.assert_conforms(wce_torch.cross_entropy, framework="torch", cases=path)
    with pytest.raises(AssertionError, match="my-training-config"):
        conformance.assert_conforms(lambda x, t, **o: wce_torch.cross_entropy(x, t) * 1.01,
                                    framework="torch", cases=path)

    np.save(tmp_path / "x.npy", x), np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "w.npy", w)
    out = tmp_path / "cli.json"
    assert main(["make-case", "cross_entropy", "--input", str(tmp_path / "x.npy"),
                 "--target", str(tmp_path / "y.npy"), "--array", f"weight={tmp_path}/w.npy",
                 "--option", "label_smoothing=0.1", "--id", "my-training-config",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(path.read_text())
    capsys.readouterr()
    assert main(["run", "--impl", "reference", "--impl", "wce_torch", "--cases", str(out),
                 "--verbose"]) == 0
    text = capsys.readouterr().out
    assert "my-training-config" in text and "0 failed" in text


def test_make_case_names_what_the_reference_rejects():
    with pytest.raises(ValueError, match="target"):
        conformance.make_case("cross_entropy", np.zeros((2, 3)), np.array([0, 5]))
