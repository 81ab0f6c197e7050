"""The golden files are what the definitions and the reference produce, byte for byte,
and malformed files are reported with the file and the case."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conformance import cases as definitions
from conformance import golden
from conformance.__main__ import main


def test_regenerating_reproduces_committed_files(capsys):
    assert main(["generate", "--check"]) == 0, capsys.readouterr().out


def test_check_detects_a_changed_file(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path)]) == 0
    path = tmp_path / "nll_loss.json"
    path.write_text(path.read_text().replace('"nll-', '"nll_', 1))
    assert main(["generate", "--check", "--out", str(tmp_path)]) == 1
    assert "nll_loss.json: would change" in capsys.readouterr().out


def test_round_trip_is_lossless():
    values = np.array([0.1, -0.0, 1e-308, 5e-324, np.nan, np.inf, -np.inf, 1 / 3])
    back = golden.decode_array(json.loads(json.dumps(golden.encode_array(values))))
    assert np.array_equal(back.view(np.uint64), values.view(np.uint64))


def test_inputs_are_exact_in_every_listed_dtype(cases):
    for case in cases:
        for name, value in case.args.items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" \
                    and name not in case.keep_dtype:
                for dtype in case.dtypes:
                    assert definitions.representable(value, dtype), (case.id, name, dtype)


def _write(tmp_path, text):
    path = tmp_path / "broken.json"
    path.write_text(text)
    return path


def test_malformed_case_names_file_and_case(tmp_path):
    good = golden.load_cases()[0].to_json()
    del good["expected"]
    path = _write(tmp_path, json.dumps({"format": golden.FORMAT, "loss": "x", "cases": [good]}))
    with pytest.raises(golden.GoldenFormatError, match=rf"broken.json: case '{good['id']}'"):
        golden.load_file(path)


def test_not_json_names_file(tmp_path):
    with pytest.raises(golden.GoldenFormatError, match="broken.json: not valid JSON"):
        golden.load_file(_write(tmp_path, "{"))


def test_unknown_clause_free_case_rejected(tmp_path):
    good = golden.load_cases()[0].to_json()
    good["clauses"] = []
    path = _write(tmp_path, json.dumps({"format": golden.FORMAT, "loss": "x", "cases": [good]}))
    with pytest.raises(golden.GoldenFormatError, match="names no clause"):
        golden.load_file(path)
