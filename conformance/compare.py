"""The comparison rule of spec section 1."""

from __future__ import annotations

import dataclasses

import numpy as np

from conformance import clauses


@dataclasses.dataclass(frozen=True)
class Comparison:
    ok: bool
    abs_err: float  # max |got - want| over finite positions
    rel_err: float  # abs_err / max |want| (norm-wise); abs_err when want is all zero
    reason: str = ""
    kind: str = ""  # why not ok: "shape", "non-finite", "zero" or "value"


def compare(got, want, dtype: str, zero_mask=None, tolerance=None) -> Comparison:
    """Compare an implementation's ``got`` with the golden ``want`` (both float64 arrays).

    Shapes must agree, non-finite values must sit in the same places with the same sign,
    positions in ``zero_mask`` must be exactly zero, and over the finite positions
    ``max|got - want| <= atol + rtol * max|want|`` with the spec's tolerance for ``dtype``
    (or ``tolerance``, to hold a peer to a stricter standard).
    """
    tol = tolerance or clauses.tolerances()[dtype]
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return Comparison(False, np.inf, np.inf, f"shape {got.shape}, expected {want.shape}",
                          "shape")
    finite = np.isfinite(want)
    abs_err = float(np.max(np.abs(got[finite] - want[finite]), initial=0.0))
    if np.isnan(abs_err):
        abs_err = np.inf
    scale = float(np.max(np.abs(want[finite]), initial=0.0))
    rel_err = abs_err / scale if scale > 0 else abs_err
    same_nonfinite = np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(
        np.where(np.isinf(got), got, 0.0), np.where(np.isinf(want), want, 0.0))
    if not same_nonfinite:
        return Comparison(False, abs_err, rel_err, _nonfinite_reason(got, want), "non-finite")
    if zero_mask is not None and np.any(got[np.asarray(zero_mask, bool)] != 0.0):
        return Comparison(False, abs_err, rel_err, "nonzero where the spec requires exact 0",
                          "zero")
    if abs_err > tol.atol + tol.rtol * scale:
        return Comparison(False, abs_err, rel_err,
                          f"error {abs_err:.3g} > atol {tol.atol:g} + rtol {tol.rtol:g} "
                          f"* {scale:.3g}", "value")
    return Comparison(True, abs_err, rel_err)


def _nonfinite_reason(got, want) -> str:
    mismatch = (np.isnan(got) != np.isnan(want)) | (
        np.where(np.isinf(got), got, 0.0) != np.where(np.isinf(want), want, 0.0))
    index = tuple(int(i) for i in np.argwhere(mismatch)[0]) if got.ndim else ()
    return f"non-finite mismatch at {index}: got {got[index]!r}, expected {want[index]!r}"
