"""A training demo of wce_jax on imbalanced data, and a PyTorch-to-JAX parity run.

``python -m wce_jax.demo`` trains a small Flax NNX classifier with optax on a
long-tailed subsample of scikit-learn's digits and compares unweighted cross-entropy,
class-weight schemes, focal losses and balanced resampling on a held-out test split.
``python -m wce_jax.demo parity`` trains the same network in PyTorch (with wce_torch)
and in Flax (with wce_jax) from identical parameters on identical batches and reports
how far the two drift apart.

Needs the ``demo`` extra (flax, optax, scikit-learn, matplotlib, tqdm); the parity run
also needs torch and wce_torch. Nothing here is imported by ``import wce_jax``.
"""
