"""The same training run in PyTorch (wce_torch) and in Flax NNX (wce_jax), step by step.

Both frameworks get the same MLP with the same initial parameters (PyTorch's
initialisation, copied into Flax with the kernels transposed: a ``torch.nn.Linear``
weight is ``(out, in)``, a Flax kernel ``(in, out)``), the same batches (drawn once with
NumPy), the same class weights, and plain SGD with the same learning rate, on the
class-weighted cross-entropy with ``ignore_index`` and label smoothing. What is left to
differ is the arithmetic of the two frameworks and of the two loss implementations.

torch is imported inside :func:`run`, so importing this module (or anything else in
wce_jax) never imports it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import wce_jax
from wce_jax.demo.data import long_tailed_digits
from wce_jax.demo.train import MLP, train_step

IGNORE_INDEX = -100
LABEL_SMOOTHING = 0.1
IGNORED_FRACTION = 0.1  # of the targets in every batch, set to IGNORE_INDEX
#: What the per-step losses must agree to, relative to the PyTorch loss.
TOLERANCES = {"float64": 1e-10, "float32": 1e-4}


@dataclasses.dataclass
class Parity:
    """Per-step losses of both frameworks and how far they and the final parameters
    differ."""

    dtype: str
    torch_losses: np.ndarray
    jax_losses: np.ndarray
    max_param_diff: float  # largest |torch - flax| over every parameter after training

    @property
    def relative_loss_diffs(self) -> np.ndarray:
        """``|torch - jax| / |torch|`` at every step."""
        return np.abs(self.torch_losses - self.jax_losses) / np.abs(self.torch_losses)

    @property
    def max_relative_loss_diff(self) -> float:
        return float(np.max(self.relative_loss_diffs))

    @property
    def tolerance(self) -> float:
        return TOLERANCES[self.dtype]

    @property
    def passed(self) -> bool:
        return self.max_relative_loss_diff <= self.tolerance


def smoothed_cross_entropy(logits, labels, weights):
    """wce_jax's class-weighted cross-entropy with ignored targets and label smoothing."""
    return wce_jax.cross_entropy(logits, labels, weight=weights, ignore_index=IGNORE_INDEX,
                                 label_smoothing=LABEL_SMOOTHING)


def run(steps: int = 200, dtype: str = "float64", learning_rate: float = 0.1,
        batch_size: int = 64, seed: int = 0) -> Parity:
    """Train both networks for ``steps`` SGD steps in ``dtype`` and compare them.

    float64 in JAX is switched on only inside this call (``jax.enable_x64``), so the
    rest of the process keeps JAX's defaults.
    """
    import torch

    import wce_torch

    split = long_tailed_digits()
    images, targets = _batches(split, steps, batch_size, seed)
    images = images.astype(dtype)
    with jax.enable_x64(dtype == "float64"):
        weights = np.array(wce_jax.class_weights_from_labels(
            split.y_train, split.num_classes, "balanced"), dtype)  # one copy for both
        flax_net = MLP(split.x_train.shape[1], num_classes=split.num_classes,
                       param_dtype=jnp.dtype(dtype), rngs=nnx.Rngs(seed))
        torch_net = _torch_twin(torch, flax_net, seed)

        sgd = torch.optim.SGD(torch_net.parameters(), lr=learning_rate)
        torch_weights, jax_weights = torch.from_numpy(weights), jnp.asarray(weights)
        torch_losses = []
        for x, y in zip(images, targets):
            sgd.zero_grad()
            loss = wce_torch.cross_entropy(torch_net(torch.from_numpy(x)),
                                           torch.from_numpy(y),
                                           weight=torch_weights,
                                           ignore_index=IGNORE_INDEX,
                                           label_smoothing=LABEL_SMOOTHING)
            loss.backward()
            sgd.step()
            torch_losses.append(loss.item())

        optimizer = nnx.Optimizer(flax_net, optax.sgd(learning_rate), wrt=nnx.Param)
        step = nnx.cached_partial(train_step, flax_net, optimizer)
        jax_losses = [step(x, y, jax_weights, loss=smoothed_cross_entropy)
                      for x, y in zip(images, targets)]
        return Parity(dtype, np.asarray(torch_losses), np.asarray(jnp.stack(jax_losses)),
                      _max_param_diff(torch_net, flax_net))


def _batches(split, steps, batch_size, seed):
    """``steps`` batches of training images and integer targets (int32, a tenth of them
    set to ``IGNORE_INDEX``), drawn once so both frameworks see the very same data."""
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, split.y_train.size, (steps, batch_size))
    ignored = rng.random((steps, batch_size)) < IGNORED_FRACTION
    targets = np.where(ignored, IGNORE_INDEX, split.y_train[indices]).astype(np.int32)
    return split.x_train[indices], targets


def _torch_twin(torch, flax_net: MLP, seed: int):
    """A PyTorch MLP with the Flax one's layer shapes and dtype, in PyTorch's default
    initialisation from ``seed`` (the global RNG is restored afterwards), copied into
    ``flax_net``: from then on both hold the same parameters."""
    flax_layers = (flax_net.hidden, flax_net.out)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch_layers = [torch.nn.Linear(*layer.kernel.shape,
                                        dtype=getattr(torch, str(layer.kernel.dtype)))
                        for layer in flax_layers]
    for torch_layer, flax_layer in zip(torch_layers, flax_layers):
        flax_layer.kernel[...] = jnp.asarray(torch_layer.weight.detach().numpy().T)
        flax_layer.bias[...] = jnp.asarray(torch_layer.bias.detach().numpy())
    return torch.nn.Sequential(torch_layers[0], torch.nn.ReLU(), torch_layers[1])


def _max_param_diff(torch_net, flax_net: MLP) -> float:
    """The largest ``|torch - flax|`` over every weight and bias."""
    pairs = []
    for torch_layer, flax_layer in zip(torch_net[::2], (flax_net.hidden, flax_net.out)):
        pairs += [(torch_layer.weight.detach().numpy().T, flax_layer.kernel[...]),
                  (torch_layer.bias.detach().numpy(), flax_layer.bias[...])]
    return max(float(np.max(np.abs(a - np.asarray(b)))) for a, b in pairs)
