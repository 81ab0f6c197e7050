"""A long-tailed training set and an untouched test set, from scikit-learn's digits.

The data are bundled with scikit-learn (1797 images of 8x8 pixels, 10 classes), so the
demo needs no network. Only the training split is subsampled: the test split keeps the
data set's (nearly uniform) class proportions, so every class's recall is measured on
about 60 images, the rare ones included.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


@dataclasses.dataclass(frozen=True)
class Split:
    """Training and test images (float32 in [0, 1], one row per 8x8 image) and labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def train_counts(self) -> np.ndarray:
        return np.bincount(self.y_train, minlength=self.num_classes)

    @property
    def test_counts(self) -> np.ndarray:
        return np.bincount(self.y_test, minlength=self.num_classes)

    @property
    def imbalance_ratio(self) -> float:
        """Largest training-class count over the smallest."""
        return float(self.train_counts.max() / self.train_counts.min())

    @property
    def classes_by_count(self) -> np.ndarray:
        """The classes from the most to the least frequent in the training split."""
        return np.argsort(-self.train_counts, kind="stable")


def long_tailed_digits(imbalance: float = 50.0, test_fraction: float = 1 / 3,
                       seed: int = 0) -> Split:
    """Digits with a geometric long tail in the training split.

    After a stratified train/test split, the classes are ranked in a random order (fixed
    by ``seed``); the class of rank ``r`` keeps ``n * imbalance**(-r / (C - 1))`` of its
    training images (rounded, at least one), where ``n`` is the smallest training-class
    count before subsampling. The most frequent class thus has ``imbalance`` times as
    many images as the rarest, up to rounding.
    """
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    num_classes = int(y.max()) + 1
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed)
    rng = np.random.default_rng(seed)
    largest = np.bincount(y_train).min()
    keep = []
    for rank, label in enumerate(rng.permutation(num_classes)):
        count = max(1, round(largest * imbalance ** (-rank / (num_classes - 1))))
        keep.append(rng.permutation(np.flatnonzero(y_train == label))[:count])
    keep = np.sort(np.concatenate(keep))
    return Split(x_train[keep], y_train[keep], x_test, y_test, num_classes)
