"""The README opens with the two set-up commands, and .ci/run runs the second one."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("```bash")
    end = lines.index("```", start + 1)
    return [l for l in lines[start + 1:end] if l.strip()], start


def test_readme_starts_with_two_setup_commands():
    commands, start = _readme_commands()
    assert start <= 2, "the set-up commands must open the README"
    assert len(commands) == 2
    main_job, tests = commands
    assert "torch==2.13.0" in main_job and "torch==2.13.0" in tests
    assert main_job.endswith("python -m conformance run")
    assert tests.endswith("python -m pytest -n auto")


def test_ci_runs_the_readme_test_command():
    _, tests = _readme_commands()[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"{tests} || status=$?" in ci
