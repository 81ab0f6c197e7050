"""The model, the jitted train step, and the comparison of imbalance remedies.

Every method trains the same MLP with the same optimizer for the same number of steps;
only the loss, its class weights and the way batches are drawn differ. Seeds change the
initialisation and the batch order; the data split is the same for every run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

import wce_jax
from wce_jax.demo import metrics
from wce_jax.demo.config import Config
from wce_jax.demo.data import Split, long_tailed_digits


class MLP(nnx.Module):
    """``in -> hidden -> classes`` with a ReLU: small enough to train in seconds on a CPU."""

    def __init__(self, in_features: int = 64, hidden: int = 128, num_classes: int = 10, *,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(in_features, hidden, param_dtype=param_dtype, rngs=rngs)
        self.out = nnx.Linear(hidden, num_classes, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


@nnx.jit(static_argnames="loss")
def train_step(model, optimizer, images, labels, weights, *, loss):
    """One optimizer step on ``loss(logits, labels, weights)``; returns the loss.

    ``loss`` is static (one compiled program per loss function), the class weights are
    an argument: every weighting of one loss shares a compiled step, across seeds too.
    """
    def loss_fn(model):
        return loss(model(images), labels, weights)

    value, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return value


@nnx.jit
def predict(model, images):
    """The most likely class of each image."""
    return jnp.argmax(model(images), axis=-1)


def cross_entropy(logits, labels, weights):
    """The class-weighted mean cross-entropy (divided by the weights of the targets)."""
    return wce_jax.cross_entropy(logits, labels, weight=weights)


def focal(logits, labels, weights):
    """The softmax focal loss with ``gamma=2`` and ``alpha=weights``, reduced like
    :func:`cross_entropy`."""
    return wce_jax.softmax_focal_loss(logits, labels, alpha=weights, gamma=2.0)


@dataclasses.dataclass(frozen=True)
class Method:
    """One remedy for the imbalance: a loss, its class weights, and a batch sampler.

    ``scheme`` names a :func:`wce_jax.class_weights_from_labels` scheme, normalised to a
    mean of 1 over the classes; ``None`` weighs every class 1. ``resample`` draws
    class-balanced batches with :func:`wce_jax.balanced_indices` instead of shuffling.
    """

    name: str
    loss: Callable = cross_entropy
    scheme: str | None = None
    beta: float = 0.999
    resample: bool = False

    def class_weights(self, labels: np.ndarray, num_classes: int) -> jax.Array:
        if self.scheme is None:
            return jnp.ones(num_classes)
        return wce_jax.class_weights_from_labels(labels, num_classes, self.scheme,
                                                 beta=self.beta, normalize="classes")

    def batches(self, labels: np.ndarray, num_classes: int, steps: int, batch_size: int,
                seed: int) -> np.ndarray:
        """Training-set indices, one row per step."""
        total = steps * batch_size
        if self.resample:
            indices = wce_jax.balanced_indices(jax.random.key(seed), labels, num_classes,
                                               total)
            return np.asarray(indices).reshape(steps, batch_size)
        rng = np.random.default_rng(seed)
        epochs = -(-total // labels.size)
        order = np.concatenate([rng.permutation(labels.size) for _ in range(epochs)])
        return order[:total].reshape(steps, batch_size)


METHODS = (
    Method("unweighted"),
    Method("balanced", scheme="balanced"),
    Method("inverse_sqrt", scheme="inverse_sqrt"),
    Method("effective_number", scheme="effective_number", beta=0.99),
    Method("focal", loss=focal),
    Method("focal+balanced", loss=focal, scheme="balanced"),
    Method("resampled", resample=True),
)


@dataclasses.dataclass
class Run:
    """What one (method, seed) run leaves: its loss per step and its test predictions."""

    seed: int
    losses: np.ndarray
    predictions: np.ndarray


def train(method: Method, seed: int, split: Split, config: Config,
          tx: optax.GradientTransformation, progress: tqdm) -> Run:
    """Train a fresh MLP with ``method`` and predict the test split.

    ``tx`` is shared by all runs: the optimizer keeps it in its graph, so a new
    transformation per run would make :func:`train_step` compile again.
    """
    model = MLP(split.x_train.shape[1], num_classes=split.num_classes, rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    step = nnx.cached_partial(train_step, model, optimizer)  # skips re-walking the graphs
    weights = method.class_weights(split.y_train, split.num_classes)
    batches = method.batches(split.y_train, split.num_classes, config.steps,
                             config.batch_size, seed)
    progress.set_description(f"{method.name} seed {seed}")
    losses = []
    for i, batch in enumerate(batches):
        losses.append(step(split.x_train[batch], split.y_train[batch], weights,
                           loss=method.loss))
        progress.update()
        if (i + 1) % 50 == 0:  # reading the loss waits for the device; not every step
            progress.set_postfix(loss=f"{float(losses[-1]):.4f}")
    return Run(seed, np.asarray(jnp.stack(losses)), np.asarray(predict(model, split.x_test)))


def compare(config: Config, methods=METHODS) -> tuple[dict, dict[str, list[Run]]]:
    """Train every method with every seed; return the results (JSON-ready) and the runs."""
    start = time.perf_counter()
    split = long_tailed_digits(config.imbalance, seed=config.data_seed)
    minority = split.classes_by_count[-config.minority_k:]
    tx = optax.adam(config.learning_rate)
    runs = {}
    total = len(methods) * len(config.seeds) * config.steps
    with tqdm(total=total, unit="step", smoothing=0.1) as progress:
        for method in methods:
            runs[method.name] = [train(method, seed, split, config, tx, progress)
                                 for seed in config.seeds]
    results = {
        "config": dataclasses.asdict(config),
        "data": {
            "train_counts": split.train_counts.tolist(),
            "test_counts": split.test_counts.tolist(),
            "imbalance_ratio": split.imbalance_ratio,
            "classes_by_count": split.classes_by_count.tolist(),
            "minority_classes": minority.tolist(),
        },
        "methods": {name: _summary(method_runs, split, minority)
                    for name, method_runs in runs.items()},
    }
    results["wall_time_s"] = time.perf_counter() - start
    return results, runs


def _summary(runs: list[Run], split: Split, minority: np.ndarray) -> dict:
    """Scores over seeds (mean, std, per seed), per-class recall and the summed confusion."""
    confusions = [metrics.confusion_matrix(split.y_test, run.predictions, split.num_classes)
                  for run in runs]
    per_seed = [metrics.scores(c, minority) for c in confusions]
    summary = {name: metrics.mean_and_std([s[name] for s in per_seed])
               for name in metrics.SCORES}
    summary["per_class_recall"] = np.mean([s["per_class_recall"] for s in per_seed],
                                          axis=0).tolist()
    summary["confusion"] = np.sum(confusions, axis=0).tolist()
    return summary
