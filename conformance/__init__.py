"""The wce conformance suite: golden cases, the float64 reference, the runner and CLI
(``python -m conformance``), and an API for your own tests: :func:`assert_conforms`
and :func:`make_case`."""

from __future__ import annotations


def assert_conforms(fn, loss="cross_entropy", framework="torch", layout="channels_first",
                    dtypes=None, cases=None):
    from conformance.api import assert_conforms as check

    return check(fn, loss, framework, layout, dtypes, cases)


def make_case(loss, input, target, **options):
    from conformance.make import make_case as make

    return make(loss, input, target, **options)


assert_conforms.__doc__ = "See :func:`conformance.api.assert_conforms`."
make_case.__doc__ = "See :func:`conformance.make.make_case`."
__all__ = ["assert_conforms", "make_case"]
