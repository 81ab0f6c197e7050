"""python -m wce_jax.demo: the quick comparison end to end (through the CLI's main), and
the PyTorch-to-JAX parity run against its tolerances."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

for module in ("jax", "flax", "optax", "sklearn", "matplotlib", "tqdm"):
    pytest.importorskip(module)

from wce_jax.demo.__main__ import main  # noqa: E402
from wce_jax.demo.metrics import SCORES  # noqa: E402
from wce_jax.demo.train import METHODS  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.stat().st_size > 0 and path.read_bytes()[:8] == PNG_MAGIC


def test_quick_demo_writes_table_json_and_plots(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--quick", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"config", "data", "methods", "wall_time_s"}
    assert set(results["methods"]) == {method.name for method in METHODS}
    data = results["data"]
    assert data["imbalance_ratio"] >= 50
    assert max(data["test_counts"]) - min(data["test_counts"]) <= 5  # test split untouched
    assert len(results["config"]["seeds"]) >= 2
    for name, summary in results["methods"].items():
        for score in SCORES:
            assert len(summary[score]["per_seed"]) == len(results["config"]["seeds"])
            assert 0 <= summary[score]["mean"] <= 1, (name, score)
        assert len(summary["per_class_recall"]) == len(data["train_counts"])
        assert sum(map(sum, summary["confusion"])) == (
            sum(data["test_counts"]) * len(results["config"]["seeds"]))
        assert name in stdout
    for png in ("loss.png", "recall.png", "confusion.png"):
        assert _is_png(out / png), png


@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-10), ("float32", 1e-4)])
def test_parity_of_torch_and_flax_training(dtype, tolerance, tmp_path, capsys):
    pytest.importorskip("torch")
    assert main(["parity", "--dtype", dtype, "--steps", "20", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / f"parity-{dtype}.json").read_text())
    assert report["steps"] == len(report["torch_losses"]) == len(report["jax_losses"]) == 20
    assert report["max_relative_loss_diff"] <= tolerance
    assert report["max_abs_param_diff"] <= (1e-12 if dtype == "float64" else 1e-5)
    assert report["torch_losses"][-1] < report["torch_losses"][0]  # it did train
    assert _is_png(tmp_path / f"parity-{dtype}.png")
    assert "max relative loss difference" in capsys.readouterr().out


def test_only_the_parity_run_imports_torch():
    """wce_jax must stay importable without torch: only wce_jax/demo/parity.py imports
    it, and only inside a function."""
    for path in (ROOT / "wce_jax").rglob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(name.split(".")[0] in ("torch", "wce_torch") for name in names):
                assert path.name == "parity.py" and id(node) not in top_level, (
                    f"{path.relative_to(ROOT)}:{node.lineno} imports {names}")
