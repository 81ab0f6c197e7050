"""pytest plugin (registered through the ``pytest11`` entry point): the fixture
``assert_conforms``, :func:`conformance.assert_conforms` for your own tests::

    import torch.nn.functional as F

    def test_my_loss_conforms(assert_conforms):
        assert_conforms(my_cross_entropy, loss="cross_entropy", framework="torch")
"""

from __future__ import annotations

import pytest


@pytest.fixture
def assert_conforms():
    """:func:`conformance.assert_conforms`: runs the golden cases of a loss against a
    function and fails the test with every failing case, its clause and its error."""
    from conformance.api import assert_conforms as check

    return check
