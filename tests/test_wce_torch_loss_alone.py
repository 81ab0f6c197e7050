"""The loss alone: when no gradient is asked for (``torch.no_grad()``, or inputs that do
not require one), wce_torch computes the losses by blocks of rows, and a reduced loss
without a losses-sized buffer. That path has to meet the spec on every golden case too
(values, errors and warnings), not only the fused path the conformance run takes."""

import pytest
import torch

import wce_torch
from conformance import golden, runner
from conformance.adapters.runners import run_torch
from conformance.adapters.wce_torch import WceTorchAdapter


class LossAloneAdapter(WceTorchAdapter):
    """wce_torch called under ``torch.no_grad()``: the values only (GRAD-* are n/a)."""

    name = "wce_torch-no_grad"
    gradients = derivatives = False

    def call(self, case, dtype, traced):
        with torch.no_grad():
            return run_torch(getattr(wce_torch, case.loss), case, dtype)


ROW_LOSSES = ("cross_entropy", "nll_loss", "binary_cross_entropy",
              "binary_cross_entropy_with_logits", "softmax_focal_loss", "sigmoid_focal_loss")


@pytest.mark.parametrize("loss", ROW_LOSSES)
def test_loss_alone_conforms(loss):
    cases = [c for c in golden.load_cases() if c.loss == loss]
    records = runner.run([LossAloneAdapter()], cases, ["float64", "float32", "bfloat16"])
    failing = [f"{r.case} [{r.dtype}]: {r.detail}" for r in records
               if r.status == runner.FAIL]
    assert not failing, "\n".join(failing)
    assert sum(r.status == runner.PASS for r in records) >= len(cases)


def test_reduced_loss_alone_sums_blocks():
    """Bigger than one block of rows: the mean is a sum of the blocks' totals."""
    p = torch.rand(64, 2 ** 16, dtype=torch.float64)
    y = (torch.rand_like(p) > 0.5).double()
    F = torch.nn.functional
    with torch.no_grad():
        for reduction in ("mean", "sum", "none"):
            torch.testing.assert_close(wce_torch.binary_cross_entropy(p, y, reduction=reduction),
                                       F.binary_cross_entropy(p, y, reduction=reduction))
            torch.testing.assert_close(
                wce_torch.binary_cross_entropy_with_logits(p, y, reduction=reduction,
                                                           pos_weight=p[0]),
                F.binary_cross_entropy_with_logits(p, y, reduction=reduction,
                                                   pos_weight=p[0]))
