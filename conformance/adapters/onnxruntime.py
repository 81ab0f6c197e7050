"""ONNX Runtime: the spec's class-index losses as one-node ONNX graphs built with
``onnx.helper`` (opset 22) and run on the ``CPUExecutionProvider``.

``cross_entropy`` with class-index targets
    ``SoftmaxCrossEntropyLoss(scores=input, labels=target[, weights=weight])`` (defined
    since opset 13), attributes ``reduction`` and ``ignore_index`` as given.
``nll_loss``
    ``NegativeLogLikelihoodLoss(input, target[, weight])`` (opset 22), the same
    attributes.

The graph's inputs take the case's arrays as they are: the scores' dtype, the labels'
integer dtype and the weight's dtype go into the graph unchanged, and the layout is
torch's (class axis 1), which is ONNX's too. ``label_smoothing == 0`` is the same as no
smoothing; ``ignore_index`` is always set (torch's default is -100, ONNX's is none).

n/a: ``label_smoothing > 0`` and probability targets (ONNX has neither);
``binary_cross_entropy`` and ``binary_cross_entropy_with_logits`` (ONNX has no binary
cross-entropy operator); bfloat16 (ONNX allows it for these operators, but ONNX Runtime
1.32 has no CPU kernel for the operators they expand to: session creation fails with
NOT_IMPLEMENTED); every gradient clause (inference has no gradients).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from conformance.adapters import Adapter, Outcome, split_args, to_host

OPSET = 22
OPS = {"cross_entropy": ("SoftmaxCrossEntropyLoss", ("scores", "labels", "weights")),
       "nll_loss": ("NegativeLogLikelihoodLoss", ("input", "target", "weight"))}

porting_notes = """\
**ONNX / ONNX Runtime** has `SoftmaxCrossEntropyLoss` (opset 13) and
`NegativeLogLikelihoodLoss` (opset 22) with class weights, `ignore_index` and
`"none"`/`"sum"`/`"mean"`, in torch's `(N, C, d1, ...)` layout; `"mean"` divides by the
sum of the weights of the non-ignored targets, as torch does, and an all-ignored mean
is NaN. Inference has no gradients. Measured on ONNX Runtime 1.32 (CPU), the losses
agree with the goldens to 2.2e-16 (float64), 1.1e-7 (float32) and 5.4e-4 (float16,
within the spec's float32-accumulation tolerance) relative, except:

* **No label smoothing and no probability targets**: neither operator has them; build
  them from `LogSoftmax`, `Mul` and `ReduceSum`.
* **No binary cross-entropy operator**: write BCE from `Log`/`Clip` or
  `Softplus`-style nodes.
* **`ignore_index` has no default**: torch's is -100; set the attribute explicitly.
* **An unknown `reduction` is not rejected**: `reduction="average"` silently sums.
* **Targets are checked only above**: a target `>= C` fails at run time, but `-1` (with
  `ignore_index` -100) silently takes the last class.
* **Shapes**: the input needs a batch axis (an unbatched `(C,)` input is rejected:
  unsqueeze it), and `SoftmaxCrossEntropyLoss` fails on an empty batch (`N = 0`).
* **dtypes**: labels must be int32 or int64, and the weights must have the scores'
  dtype: other integer labels and float64 weights with float32 scores are rejected
  when the session is created; cast them. The operators allow bfloat16, but ONNX
  Runtime has no CPU kernel for it.
* **A `+inf` logit at a non-target class** gives loss `+inf` in float64 (NaN in float32
  and float16, as the spec says).
"""


def _elem_type(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def build_model(loss, arrays, attributes):
    """One node of the loss with one graph input per array, in the operator's input
    order, named as the operator names them; returns the model and its feeds."""
    op, names = OPS[loss]
    feeds = {name: arrays[k] for name, k in zip(names, ("input", "target", "weight"))
             if k in arrays}
    inputs = [helper.make_tensor_value_info(name, _elem_type(a.dtype), a.shape)
              for name, a in feeds.items()]
    node = helper.make_node(op, list(feeds), ["loss"], **attributes)
    output = helper.make_tensor_value_info("loss", _elem_type(arrays["input"].dtype), None)
    graph = helper.make_graph([node], loss, inputs, [output])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), feeds


class OnnxRuntimeAdapter(Adapter):
    name = "onnxruntime"
    description = (f"onnxruntime {ort.__version__} (onnx {onnx.__version__}, opset {OPSET}),"
                   " CPUExecutionProvider")
    losses = frozenset(OPS)
    dtypes = ("float64", "float32", "float16")
    gradients = False

    def unsupported(self, case):
        if reason := super().unsupported(case):
            return reason
        target = case.args.get("target")
        if case.loss == "cross_entropy" and isinstance(target, np.ndarray) \
                and target.dtype.kind == "f":
            return "ONNX SoftmaxCrossEntropyLoss has no probability targets"
        if case.args.get("label_smoothing", 0.0) != 0.0:
            return "ONNX SoftmaxCrossEntropyLoss has no label smoothing"
        return None

    def call(self, case, dtype, traced):
        args = split_args(case, dtype, to_host)
        args.pop("label_smoothing", None)  # 0.0 here: the same as no smoothing
        arrays = {k: v for k, v in args.items() if isinstance(v, np.ndarray)}
        attributes = {"reduction": args.get("reduction", "mean"),
                      "ignore_index": args.get("ignore_index", -100)}
        model, feeds = build_model(case.loss, arrays, attributes)
        options = ort.SessionOptions()
        options.log_severity_level = 4  # errors come back as exceptions; no stderr copy
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        (output,) = session.run(None, feeds)
        return Outcome(np.asarray(output).astype(np.float64), None, str(output.dtype), None)


ADAPTER = OnnxRuntimeAdapter()
