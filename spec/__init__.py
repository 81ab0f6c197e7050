"""wce_spec: the normative spec (SPEC.md) and the golden cases (cases/*.json) as data.

Installed under the name ``wce_spec`` so that ``python -m conformance`` finds them from
any install; read them with :mod:`conformance.clauses` and :mod:`conformance.golden`.
"""
