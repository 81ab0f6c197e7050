"""Exact expected values: every number in a golden case is the correctly rounded float64 of
the exact result (spec section 1, *Expected values*).

Each loss is written here a second time, row by row from the spec's formulas, on mpmath
numbers: inputs are converted exactly, every operation runs at a working precision of
``P`` bits, and each result is rounded once to float64 (round to nearest, ties to even,
subnormals included). :func:`evaluate` runs a case at ``P = 192, 384, 768, ...`` and
stops when two successive precisions give the same float64 bits everywhere (Ziv's
strategy), so a value that cancels heavily simply takes a higher precision, and an exact
zero reached through cancellation is found when its residue drops below float64's
smallest subnormal. Nothing here depends on the CPU, the BLAS, NumPy's SIMD loops or the
C library: mpmath is pure Python integer arithmetic.

Special values follow IEEE arithmetic as spec section 0 says: ``0 * inf`` and
``inf - inf`` are NaN, ``x / 0`` is ``±inf`` (NaN for ``0 / 0``), ``log 0 = -inf``.
mpmath has these rules except for division by zero and logarithms of negative numbers,
which :func:`_div` and :func:`_log` supply. mpmath has no negative zero, so every exact
zero is written as ``+0.0``; the sign of a zero is not part of the contract.

Argument checking, errors and warnings stay with ``conformance/reference.py``: this module
is only called on arguments the reference accepted (or, for a traced call, on arguments
whose values it would reject), and computes what spec sections 3 to 17 define for them.
"""

from __future__ import annotations

import math

import numpy as np

try:
    import mpmath
    from mpmath import mp, mpf
except ImportError as exc:  # only generating cases needs it
    raise ImportError("generating golden cases needs mpmath: pip install 'wce[generate]'"
                      ) from exc

__all__ = ["evaluate", "softmax", "to_float64", "PRECISIONS"]

#: Working precisions tried in turn (bits); a case needs two successive ones to agree.
PRECISIONS = (192, 384, 768, 1536, 3072)

_NAN = mpf("nan")
_INF = mpf("inf")
BCE_LOG_CLAMP = -100  # [BCE-CLAMP]
BCE_GRAD_EPS = 9.999999960041972e-13  # [GRAD-BCE]: 1e-12 rounded to float32


# ----------------------------------------------------------------------------------
# Rounding to float64 and IEEE special values.


def to_float64(x) -> float:
    """The float64 nearest to the mpmath number ``x`` (ties to even), with gradual
    underflow to subnormals and overflow to ``±inf``: one correct rounding."""
    if not isinstance(x, mpf):
        x = mpf(x)
    if mpmath.isnan(x):
        return math.nan
    if mpmath.isinf(x):
        return math.inf if x > 0 else -math.inf
    sign, man, exp, bc = x._mpf_
    if man == 0:
        return 0.0
    top = exp + bc - 1  # |x| in [2^top, 2^(top+1))
    lsb = max(top - 52, -1074)  # weight of the last bit float64 keeps at this magnitude
    shift = lsb - exp
    if shift <= 0:
        q = man << -shift
    else:
        q, r = divmod(man, 1 << shift)
        half = 1 << (shift - 1)
        if r > half or (r == half and q & 1):
            q += 1
    try:
        value = math.ldexp(float(q), lsb)  # q < 2^54: converted exactly
    except OverflowError:
        value = math.inf
    return -value if sign else value


def _m(v) -> mpf:
    """A float (NaN and infinities included) as an mpmath number, exactly."""
    return mpf(float(v))


class Dual:
    """``v + d·ε`` with ``ε² = 0``: carried through the formulas below, the ``d`` part is
    the exact directional derivative (spec section 18): of the loss, the JVP; of the
    gradient, the Hessian-vector product. Comparisons look at ``v`` alone, so every
    branch (a clamp, an ignored row) is taken as in the value."""

    __slots__ = ("v", "d")

    def __init__(self, v, d):
        self.v, self.d = v, d

    def __add__(self, o):
        return Dual(self.v + _v(o), self.d + _d(o))

    __radd__ = __add__

    def __sub__(self, o):
        return Dual(self.v - _v(o), self.d - _d(o))

    def __rsub__(self, o):
        return Dual(_v(o) - self.v, _d(o) - self.d)

    def __mul__(self, o):
        return Dual(self.v * _v(o), self.d * _v(o) + self.v * _d(o))

    __rmul__ = __mul__

    def __truediv__(self, o):
        if not isinstance(o, Dual):
            return Dual(_div(self.v, o), _div(self.d, o))
        return Dual(self.v / o.v, (self.d * o.v - self.v * o.d) / (o.v * o.v))

    def __rtruediv__(self, o):
        return Dual(_v(o) / self.v, -_v(o) * self.d / (self.v * self.v))

    def __neg__(self):
        return Dual(-self.v, -self.d)

    def __pow__(self, n):
        return Dual(self.v ** n, n * self.v ** (n - 1) * self.d)

    def __abs__(self):
        return -self if self.v < 0 else self

    def __lt__(self, o):
        return self.v < _v(o)

    def __le__(self, o):
        return self.v <= _v(o)

    def __gt__(self, o):
        return self.v > _v(o)

    def __ge__(self, o):
        return self.v >= _v(o)

    def __eq__(self, o):
        return self.v == _v(o)

    __hash__ = None


def _v(x):
    return x.v if isinstance(x, Dual) else x


def _d(x):
    return x.d if isinstance(x, Dual) else 0


def _lift(f, derivative):
    """``f`` on numbers, extended to dual numbers with ``f'`` given by ``derivative``."""
    def lifted(a):
        if isinstance(a, Dual):
            return Dual(f(a.v), derivative(a.v) * a.d)
        return f(a)
    return lifted


def _isnan(a):
    return mpmath.isnan(_v(a))


def _div(a, b):
    """IEEE division: ``x / 0`` is ``±inf`` and ``0 / 0`` NaN."""
    if isinstance(a, Dual) or isinstance(b, Dual):
        return Dual(_v(a), _d(a)) / b
    if b == 0 and not mpmath.isnan(b):
        if a == 0 or mpmath.isnan(a):
            return _NAN
        return _INF if a > 0 else -_INF
    return a / b


def _log_number(a):
    if mpmath.isnan(a) or a < 0:
        return _NAN
    return mpmath.log(a)


def _log1p_number(a):
    if mpmath.isnan(a) or a < -1:
        return _NAN
    return mpmath.log1p(a)


def _sqrt_number(a):
    return _NAN if mpmath.isnan(a) or a < 0 else mpmath.sqrt(a)


_exp = _lift(mpmath.exp, mpmath.exp)
_expm1 = _lift(mpmath.expm1, mpmath.exp)
_log = _lift(_log_number, lambda a: _div(mpf(1), a))
_log1p = _lift(_log1p_number, lambda a: _div(mpf(1), 1 + a))
_sqrt = _lift(_sqrt_number, lambda a: _div(mpf(1), 2 * _sqrt_number(a)))
_tanh = _lift(mpmath.tanh, lambda a: 1 - mpmath.tanh(a) ** 2)


def _max(values):
    """Maximum that is NaN as soon as one value is NaN (NumPy's ``max``)."""
    values = list(values)
    if any(_isnan(v) for v in values):
        return _NAN
    return max(values, key=_v)


def _maximum(a, b):
    return _NAN if _isnan(a) or _isnan(b) else (a if _v(a) >= _v(b) else b)


def _minimum(a, b):
    return _NAN if _isnan(a) or _isnan(b) else (a if _v(a) <= _v(b) else b)


def _sum_numbers(values):
    if any(mpmath.isnan(v) for v in values):
        return _NAN
    infs = {1 if v > 0 else -1 for v in values if mpmath.isinf(v)}
    if len(infs) == 2:
        return _NAN
    if infs:
        return _INF * infs.pop()
    return mpmath.fsum(values)


def _sum(values):
    """The sum at working precision, NaN for NaN or ``inf - inf``."""
    values = list(values)
    if any(isinstance(v, Dual) for v in values):
        return Dual(_sum_numbers([_v(v) for v in values]),
                    _sum_numbers([_d(v) for v in values]))
    return _sum_numbers(values)


def _power(u, gamma):
    """``u^gamma`` with ``u^0 = 1``, also at ``u = 0``, where its derivative is taken as 0
    [FOCAL-GRAD]."""
    if gamma == 0:
        return mpf(1)
    if _isnan(u):
        return _NAN
    if _v(u) == 0:
        return mpf(0)
    if isinstance(u, Dual):
        return Dual(mpmath.power(u.v, gamma), gamma * mpmath.power(u.v, gamma - 1) * u.d)
    return mpmath.power(u, gamma)


def _power_derivative_term(u, gamma, factor):
    """``gamma u^(gamma-1) factor``, 0 where ``u = 0`` [FOCAL-GRAD]."""
    if gamma == 0 or not _v(u) > 0:
        return mpf(0)
    return gamma * _power(u, gamma - 1) * factor


# ----------------------------------------------------------------------------------
# Layout: (N, C, d1..dk) <-> (M, C) rows, reductions and the upstream gradient.


class Tangent:
    """An input array with a tangent of its shape: its entries enter as :class:`Dual`."""

    def __init__(self, value, tangent):
        self.value = np.asarray(value, dtype=np.float64)
        self.tangent = np.broadcast_to(np.asarray(tangent, dtype=np.float64),
                                       self.value.shape)
        self.shape, self.ndim = self.value.shape, self.value.ndim


def _numbers(a) -> np.ndarray:
    """An input as an object array of exact numbers (dual numbers for a :class:`Tangent`)."""
    if isinstance(a, Tangent):
        out = np.empty(a.shape, dtype=object)
        for index in np.ndindex(a.shape):
            out[index] = Dual(_m(a.value[index]), _m(a.tangent[index]))
        return out
    a = np.asarray(a, dtype=np.float64)
    out = np.empty(a.shape, dtype=object)
    for index in np.ndindex(a.shape):
        out[index] = _m(a[index])
    return out


def _rows(a):
    """(C,) or (N, C, d1..dk) -> list of M rows of C exact numbers (spec section 0)."""
    a = _numbers(a)
    rows = a[None, :] if a.ndim == 1 else np.moveaxis(a, 1, -1).reshape(-1, a.shape[1])
    return [list(row) for row in rows]


def _unrows(rows, shape):
    """Inverse of :func:`_rows`, as an object array."""
    num_classes = shape[0] if len(shape) == 1 else shape[1]
    flat = _array([v for row in rows for v in row], (len(rows), num_classes))
    if len(shape) == 1:
        return flat[0]
    moved = (shape[0],) + tuple(shape[2:]) + (shape[1],)
    return np.moveaxis(flat.reshape(moved), -1, 1)


def _num_classes(input):
    return np.shape(input)[0 if np.ndim(input) == 1 else 1]


def _flat(a, shape=None):
    a = _numbers(a)
    if shape is not None:
        a = np.broadcast_to(a, shape)
    return list(a.ravel())


def _array(values, shape):
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out.reshape(shape)


def _reduce(losses, reduction, denominator, shape, counted=None):
    """[CE-NONE] [CE-SUM] [CE-MEAN] and their twins for the other losses. ``counted``:
    the number of elements that enter the mean (all of them unless given)."""
    if reduction == "none":
        return _array(losses, shape)
    total = _sum(losses)
    if reduction == "sum":
        return total
    if denominator == 0:  # [EDGE-ALL-IGNORED] [EDGE-EMPTY] [EDGE-ZERO-WEIGHT-SUM]
        counted = len(losses) if counted is None else counted
        # [JVP]: the tangent is the gradient's contraction, 0 when nothing counts
        return Dual(_NAN, mpf(0) if counted == 0 else _NAN) if isinstance(
            total, Dual) else _NAN
    return _div(total, denominator)


def _row_scale(grad_output, reduction, denominator, count):
    """``s_i`` of spec section 9: how the upstream gradient reaches element ``i``."""
    g = np.asarray(grad_output, dtype=np.float64)
    if reduction == "none":
        return [_m(v) for v in g.ravel()]
    if reduction == "sum":
        return [_m(g)] * count
    return [_div(_m(g), denominator)] * count


def _class_weight(weight, num_classes):
    return [mpf(1)] * num_classes if weight is None else _flat(weight)


# ----------------------------------------------------------------------------------
# Class-index targets: cross_entropy, nll_loss, softmax_focal_loss.


def _log_softmax(row):
    """Shifted log-softmax of one row (spec section 0, Arithmetic)."""
    if not row:
        return []
    m = _max(row)
    shifted = [v - m for v in row]  # inf - inf = NaN for a +inf or all -inf row
    lse = _log(_sum(_exp(v) for v in shifted))
    return [v - lse for v in shifted]


class _Targets:
    """Per-row target quantities: ``valid``, the target weight ``w_y`` (0 if ignored, NaN
    for an out-of-range target [TRACE-TARGET-RANGE]) and the denominator ``D`` [CE-MEAN]."""

    def __init__(self, target, weight, ignore_index, num_classes):
        self.y = [int(v) for v in np.asarray(target).ravel()]
        self.w = _class_weight(weight, num_classes)
        self.valid = [v != ignore_index for v in self.y]
        self.bad = [ok and not 0 <= v < num_classes for v, ok in zip(self.y, self.valid)]
        self.w_y = [(_NAN if bad else self.w[v]) if ok else mpf(0)
                    for v, ok, bad in zip(self.y, self.valid, self.bad)]
        self.D = _sum(wy for wy, ok in zip(self.w_y, self.valid) if ok)

    def safe(self, i):
        """The target class of a valid row, class 0 otherwise (its terms are discarded)."""
        return self.y[i] if self.valid[i] and not self.bad[i] else 0

    def picked(self, i, row):
        return _NAN if self.bad[i] else row[self.safe(i)]

    def onehot(self, i, c):
        return 1 if c == self.safe(i) else 0


def _ce_element(t, i, lp, eps, num_classes):
    """[CE-ELEM] [CE-SMOOTH] of valid row ``i`` with log-probabilities ``lp``."""
    loss = (1 - eps) * t.w_y[i] * -t.picked(i, lp)
    if eps > 0:
        loss = loss + (eps / num_classes) * _sum(wc * -v for wc, v in zip(t.w, lp))
    return loss


def _ce_gradient_row(t, i, lp, s_i, eps, num_classes, total_w):
    """[GRAD-CE] row ``i`` of a valid row, and its probabilities ``p``."""
    coef = s_i * (1 - eps) * t.w_y[i]  # formed first, [EDGE-ZERO-WEIGHT-SUM]
    p = [_exp(v) for v in lp]
    row = [coef * (p[c] - t.onehot(i, c)) for c in range(num_classes)]
    if eps > 0:
        smooth = s_i * eps / num_classes
        row = [row[c] + smooth * (total_w * p[c] - t.w[c]) for c in range(num_classes)]
    return row, p


def _class_cross_entropy(input, target, weight, ignore_index, reduction, eps, grad_output):
    """[CE-ELEM] [CE-SMOOTH] [CE-IGNORE] [CE-MEAN]; gradient [GRAD-CE]."""
    rows = _rows(input)
    num_classes = _num_classes(input)
    t = _Targets(target, weight, ignore_index, num_classes)
    eps = _m(eps)
    lps = [_log_softmax(r) for r in rows]
    losses = [_ce_element(t, i, lp, eps, num_classes) if t.valid[i] else mpf(0)
              for i, lp in enumerate(lps)]
    output = _reduce(losses, reduction, t.D, np.shape(target), sum(t.valid))
    if grad_output is None:
        return output, None
    s = _row_scale(grad_output, reduction, t.D, len(rows))
    total_w = _sum(t.w)
    grad = []
    for i, lp in enumerate(lps):
        if not t.valid[i]:
            grad.append([mpf(0)] * num_classes)
            continue
        grad.append(_ce_gradient_row(t, i, lp, s[i], eps, num_classes, total_w)[0])
    return output, {"input": _unrows(grad, np.shape(input))}


def _probability_cross_entropy(input, target, weight, reduction, eps, grad_output):
    """[CEP-ELEM] [CEP-MEAN]; gradient [GRAD-CEP]."""
    rows, targets = _rows(input), _rows(target)
    num_classes = _num_classes(input)
    w = _class_weight(weight, num_classes)
    eps = _m(eps)
    smoothed = [[(1 - eps) * v + eps / num_classes for v in row] for row in targets]
    lps = [_log_softmax(r) for r in rows]
    losses = [_sum(wc * tc * -v for wc, tc, v in zip(w, tr, lp))
              for tr, lp in zip(smoothed, lps)]
    shape = () if np.ndim(input) == 1 else (np.shape(input)[0],) + np.shape(input)[2:]
    count = mpf(len(rows))
    output = _reduce(losses, reduction, count, shape)
    if grad_output is None:
        return output, None
    s = _row_scale(grad_output, reduction, count, len(rows))
    grad = []
    for i, (tr, lp) in enumerate(zip(smoothed, lps)):
        wt = [wc * tc for wc, tc in zip(w, tr)]
        total = _sum(wt)
        grad.append([s[i] * (total * _exp(v) - wtc) for v, wtc in zip(lp, wt)])
    return output, {"input": _unrows(grad, np.shape(input))}


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, *, grad_output=None):
    if np.asarray(target).dtype.kind == "f":
        return _probability_cross_entropy(input, target, weight, reduction,
                                          label_smoothing, grad_output)
    return _class_cross_entropy(input, target, weight, ignore_index, reduction,
                                label_smoothing, grad_output)


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean", *,
             grad_output=None):
    """[NLL-ELEM]; gradient [GRAD-NLL]."""
    rows = _rows(input)
    num_classes = _num_classes(input)
    t = _Targets(target, weight, ignore_index, num_classes)
    losses = [-t.w_y[i] * t.picked(i, row) if t.valid[i] else mpf(0)
              for i, row in enumerate(rows)]
    output = _reduce(losses, reduction, t.D, np.shape(target), sum(t.valid))
    if grad_output is None:
        return output, None
    s = _row_scale(grad_output, reduction, t.D, len(rows))
    grad = []
    for i in range(len(rows)):
        coef = -s[i] * t.w_y[i] if t.valid[i] else mpf(0)
        row = [_NAN if t.bad[i] else (coef if t.onehot(i, c) else mpf(0))
               for c in range(num_classes)]
        grad.append(row)
    return output, {"input": _unrows(grad, np.shape(input))}


def softmax_focal_loss(input, target, alpha=None, gamma=2.0, ignore_index=-100,
                       reduction="mean", *, grad_output=None):
    """[FOCAL-SOFTMAX]: ``alpha[y] (1 - p_y)^gamma (-log p_y)``; gradient [FOCAL-GRAD]."""
    rows = _rows(input)
    num_classes = _num_classes(input)
    t = _Targets(target, alpha, ignore_index, num_classes)
    gamma = _m(gamma)
    lps = [_log_softmax(r) for r in rows]
    lp_y = [t.picked(i, lp) for i, lp in enumerate(lps)]
    u = [-_expm1(v) for v in lp_y]  # 1 - p_y without cancellation
    losses = [t.w_y[i] * _power(u[i], gamma) * -lp_y[i] if t.valid[i] else mpf(0)
              for i in range(len(rows))]
    output = _reduce(losses, reduction, t.D, np.shape(target), sum(t.valid))
    if grad_output is None:
        return output, None
    s = _row_scale(grad_output, reduction, t.D, len(rows))
    grad = []
    for i, lp in enumerate(lps):
        if not t.valid[i]:
            grad.append([mpf(0)] * num_classes)
            continue
        q = _exp(lp_y[i])
        b = _power(u[i], gamma) - _power_derivative_term(u[i], gamma, q * lp_y[i])
        coef = s[i] * t.w_y[i] * b  # formed first, [EDGE-ZERO-WEIGHT-SUM]
        grad.append([coef * (_exp(v) - t.onehot(i, c)) for c, v in enumerate(lp)])
    return output, {"input": _unrows(grad, np.shape(input))}


# ----------------------------------------------------------------------------------
# Binary losses and the sigmoid focal loss (spec sections 6, 7, 14).


def _outside_unit_interval(v):
    return not (0 <= v <= 1)  # NaN is outside


def binary_cross_entropy(input, target, weight=None, reduction="mean", *,
                         grad_output=None):
    """[BCE-ELEM] [BCE-CLAMP] [BCE-WEIGHT] [BCE-MEAN]; gradient [GRAD-BCE]; NaN where a
    value lies outside [0, 1] [TRACE-BCE-RANGE]."""
    shape = np.shape(input)
    p, y = _flat(input), _flat(target)
    w = _flat(1.0 if weight is None else weight, shape)
    bad = [_outside_unit_interval(a) or _outside_unit_interval(b) for a, b in zip(p, y)]
    eta = _m(BCE_GRAD_EPS)
    losses = []
    for pi, yi, wi, bi in zip(p, y, w, bad):
        pv = _v(pi)
        log_p = _maximum(_log(pv), BCE_LOG_CLAMP)
        log_1mp = _maximum(_log(1 - pv), BCE_LOG_CLAMP)
        loss = _NAN if bi else -wi * (yi * log_p + (1 - yi) * log_1mp)
        if isinstance(pi, Dual):  # [JVP]: the tangent goes through the guarded gradient
            slope = _NAN if bi else _div(wi * (pv - yi), _maximum(pv * (1 - pv), eta))
            loss = Dual(loss, slope * pi.d)
        losses.append(loss)
    count = mpf(len(p))
    output = _reduce(losses, reduction, count, shape)
    if grad_output is None:
        return output, None
    s = _row_scale(grad_output, reduction, count, len(p))
    grad = [_NAN if bi else _div(si * wi * (pi - yi), _maximum(pi * (1 - pi), eta))
            for si, wi, pi, yi, bi in zip(s, w, p, y, bad)]
    return output, {"input": _array(grad, shape)}


def _log_sigmoid(x):
    """``min(x, 0) - log1p(exp(-|x|))`` [BCEL-ELEM], whose derivative is
    ``sigmoid(-x)`` (also at ``x = 0``, where the two branches meet)."""
    if isinstance(x, Dual):
        return Dual(_log_sigmoid(x.v), _exp(_log_sigmoid(-x.v)) * x.d)
    return _minimum(x, 0) - _log1p(_exp(-abs(x)))


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",
                                     pos_weight=None, *, grad_output=None):
    """[BCEL-ELEM] ``w ((1-y) x - q log_sigmoid(x))``, ``q = 1 + (pos_weight-1) y``
    [BCEL-POS-WEIGHT]; gradient [GRAD-BCEL] ``s w ((1-y) - q sigmoid(-x))``."""
    shape = np.shape(input)
    x, y = _flat(input), _flat(target)
    w = _flat(1.0 if weight is None else weight, shape)
    pw = _flat(1.0 if pos_weight is None else pos_weight, shape)
    q = [1 + (pwi - 1) * yi for pwi, yi in zip(pw, y)]
    losses = [wi * ((1 - yi) * xi - qi * _log_sigmoid(xi))
              for wi, yi, xi, qi in zip(w, y, x, q)]
    count = mpf(len(x))
    output = _reduce(losses, reduction, count, shape)
    if grad_output is None:
        return output, None
    s = _row_scale(grad_output, reduction, count, len(x))
    grad = [si * wi * ((1 - yi) - qi * _exp(_log_sigmoid(-xi)))
            for si, wi, yi, qi, xi in zip(s, w, y, q, x)]
    return output, {"input": _array(grad, shape)}


def sigmoid_focal_loss(input, target, alpha=0.25, gamma=2.0, reduction="none", *,
                       grad_output=None):
    """[FOCAL-SIGMOID] ``alpha_t (1 - p_t)^gamma ce``; gradient [FOCAL-GRAD]."""
    shape = np.shape(input)
    x, y = _flat(input), _flat(target)
    gamma = _m(gamma)
    sig_x = [_exp(_log_sigmoid(v)) for v in x]
    sig_neg_x = [_exp(_log_sigmoid(-v)) for v in x]
    u = [yi * sn + (1 - yi) * sp for yi, sp, sn in zip(y, sig_x, sig_neg_x)]  # 1 - p_t
    ce = [(1 - yi) * xi - _log_sigmoid(xi) for yi, xi in zip(y, x)]
    if alpha is None or alpha < 0:
        alpha_t = [mpf(1)] * len(x)
    else:
        a = _m(alpha)
        alpha_t = [a * yi + (1 - a) * (1 - yi) for yi in y]
    losses = [at * _power(ui, gamma) * ci for at, ui, ci in zip(alpha_t, u, ce)]
    count = mpf(len(x))
    output = _reduce(losses, reduction, count, shape)
    if grad_output is None:
        return output, None
    s = _row_scale(grad_output, reduction, count, len(x))
    grad = []
    for i in range(len(x)):
        du = (1 - 2 * y[i]) * sig_x[i] * sig_neg_x[i]
        dce = (1 - y[i]) - sig_neg_x[i]
        d = (_power_derivative_term(u[i], gamma, du * ce[i])
             + _power(u[i], gamma) * dce)
        grad.append(s[i] * alpha_t[i] * d)
    return output, {"input": _array(grad, shape)}


# ----------------------------------------------------------------------------------
# Linear cross-entropy (spec section 17).


def _lse(row):
    """``log sum_c exp(z_c)``, shifted by the row's maximum."""
    m = _max(row) if row else mpf(0)
    return m + _log(_sum(_exp(v - m) for v in row))


def _matmul(a, b):
    """``a @ b`` for lists of rows, each dot product at working precision."""
    columns = list(zip(*b))
    return [[_sum(x * y for x, y in zip(row, col)) for col in columns] for row in a]


def linear_cross_entropy(hidden, weight, target, *, class_weight=None, ignore_index=-100,
                         reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=None,
                         chunk_size=None, grad_output=None):
    """[LCE-ELEM] [LCE-ZLOSS] [LCE-SOFTCAP]; gradients [LCE-GRAD] for hidden and weight."""
    del chunk_size  # a schedule, not a value
    hidden_shape = np.shape(hidden)
    h = [list(row) for row in _numbers(hidden).reshape(-1, hidden_shape[-1])]
    w = [list(row) for row in _numbers(weight)]
    a = _matmul(h, [list(col) for col in zip(*w)])
    cap = None if softcap is None else _m(softcap)
    z = a if cap is None else [[cap * _tanh(v / cap) for v in row] for row in a]
    num_classes = len(w)
    t = _Targets(target, class_weight, ignore_index, num_classes)
    eps, zl = _m(label_smoothing), _m(z_loss)
    lps = [_log_softmax(r) for r in z]
    lses = [_lse(r) for r in z]
    losses = []
    for i, lp in enumerate(lps):
        loss = _ce_element(t, i, lp, eps, num_classes)
        if zl:
            loss = loss + zl * t.w_y[i] * lses[i] ** 2
        losses.append(loss if t.valid[i] else mpf(0))
    output = _reduce(losses, reduction, t.D, np.shape(target), sum(t.valid))
    if grad_output is None:
        return output, None
    s = _row_scale(grad_output, reduction, t.D, len(z))
    total_w = _sum(t.w)
    gz = []
    for i, lp in enumerate(lps):
        if not t.valid[i]:
            gz.append([mpf(0)] * num_classes)
            continue
        row, p = _ce_gradient_row(t, i, lp, s[i], eps, num_classes, total_w)
        if zl:
            zcoef = s[i] * 2 * zl * t.w_y[i] * lses[i]
            row = [row[c] + zcoef * p[c] for c in range(num_classes)]
        gz.append(row)
    if cap is not None:
        gz = [[g * (1 - (zv / cap) ** 2) for g, zv in zip(gr, zr)] for gr, zr in zip(gz, z)]
    grad_hidden = _matmul(gz, w)
    grad_weight = _matmul([list(col) for col in zip(*gz)], h)
    return output, {
        "hidden": _array([v for row in grad_hidden for v in row], hidden_shape),
        "weight": _array([v for row in grad_weight for v in row], np.shape(weight)),
    }


# ----------------------------------------------------------------------------------
# Class-weight schemes (spec section 13).


def _raw_weight(nc, counts, scheme, beta):
    """[CW-INVERSE] [CW-BALANCED] [CW-MAX] [CW-INVERSE-SQRT] [CW-EFFECTIVE-NUMBER]
    [CW-MEDIAN-FREQUENCY] for a class with ``n_c > 0``."""
    total = _sum(counts)
    if scheme == "inverse":
        return 1 / nc
    if scheme == "balanced":
        return total / (len(counts) * nc)
    if scheme == "max":
        return _max(counts) / nc
    if scheme == "inverse_sqrt":
        return 1 / _sqrt(nc)
    if scheme == "effective_number":
        b = _m(beta)
        return (1 - b) / (1 - mpmath.power(b, nc))
    frequencies = sorted(n / total for n in counts)
    k = len(frequencies)
    median = (frequencies[(k - 1) // 2] + frequencies[k // 2]) / 2
    return median / (nc / total)


def _weights_from_counts(counts, scheme, beta, normalize, max_weight):
    """[CW-NORMALIZE] [CW-ZERO-COUNT] (NaN for a zero count when nothing caps it)."""
    present = [n > 0 for n in counts]
    r = [_raw_weight(n, counts, scheme, beta) if ok else _NAN
         for n, ok in zip(counts, present)]
    kept = [v for v, ok in zip(r, present) if ok]
    if normalize == "classes" and kept:
        factor = len(kept) / _sum(kept)
        r = [v * factor if ok else v for v, ok in zip(r, present)]
    elif normalize == "samples" and kept:
        factor = (_sum(n for n, ok in zip(counts, present) if ok)
                  / _sum(n * v for n, v, ok in zip(counts, r, present) if ok))
        r = [v * factor if ok else v for v, ok in zip(r, present)]
    if max_weight is not None:
        cap = _m(max_weight)
        r = [_minimum(v, cap) if ok else cap for v, ok in zip(r, present)]
    return r


def class_weights(counts, scheme="balanced", *, beta=0.999, normalize=None,
                  max_weight=None, grad_output=None):
    del grad_output
    n = np.asarray(counts, dtype=np.float64)
    if not (np.isfinite(n) & (n >= 0)).all():
        return np.full(len(n), np.nan), None  # traced: no weight can be trusted
    r = _weights_from_counts(_flat(n), scheme, beta, normalize, max_weight)
    return _array(r, n.shape), None


def _label_counts(labels, num_classes, ignore_index):
    """[CW-FROM-LABELS]: per-class counts of the labels that are not ignore_index."""
    y = np.asarray(labels).astype(np.int64).ravel()
    valid = (y != ignore_index) & (y >= 0) & (y < num_classes)
    counts = np.bincount(y[valid], minlength=num_classes)
    return [mpf(int(c)) for c in counts], y, valid


def class_weights_from_labels(labels, num_classes, scheme="balanced", *, ignore_index=-100,
                              beta=0.999, normalize=None, max_weight=None,
                              grad_output=None):
    del grad_output
    counts, _, _ = _label_counts(labels, num_classes, ignore_index)
    r = _weights_from_counts(counts, scheme, beta, normalize, max_weight)
    return _array(r, (num_classes,)), None


def sample_weights_from_labels(labels, num_classes, scheme="inverse", *, ignore_index=-100,
                               beta=0.999, normalize=None, max_weight=None,
                               grad_output=None):
    """``w[y_i]`` per sample, 0 if ignored [RS-SAMPLE-WEIGHTS]."""
    del grad_output
    counts, y, valid = _label_counts(labels, num_classes, ignore_index)
    r = _weights_from_counts(counts, scheme, beta, normalize, max_weight)
    values = [r[int(v)] if ok else mpf(0) for v, ok in zip(y, valid)]
    return _array(values, np.shape(labels)), None


def pos_weight_from_labels(targets, *, max_weight=None, grad_output=None):
    """Per-label negatives over positives along the last axis [CW-POS-WEIGHT]."""
    del grad_output
    t = np.asarray(targets, dtype=np.float64)
    t = t.reshape(-1, t.shape[-1])
    out = []
    for column in t.T:
        values = _flat(column)
        positives = _sum(values)
        negatives = _sum(1 - v for v in values)
        if positives > 0:
            w = negatives / positives
            out.append(w if max_weight is None else _minimum(w, _m(max_weight)))
        else:
            out.append(_NAN if max_weight is None else _m(max_weight))
    return _array(out, (t.shape[1],)), None


def softmax(x, axis):
    """Softmax of the float64 array ``x`` along ``axis``, each entry correctly rounded
    (for generating probability inputs without CPU-dependent rounding)."""
    moved = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    out = np.empty(moved.shape)
    with mp.workprec(PRECISIONS[-1]):
        for index in np.ndindex(moved.shape[:-1]):
            row = _flat(moved[index])
            m = _max(row)
            e = [_exp(v - m) for v in row]
            total = _sum(e)
            out[index] = [to_float64(v / total) for v in e]
    return np.moveaxis(out, -1, axis)


# ----------------------------------------------------------------------------------
# Ziv's loop.

LOSSES = {
    "cross_entropy": cross_entropy,
    "nll_loss": nll_loss,
    "binary_cross_entropy": binary_cross_entropy,
    "binary_cross_entropy_with_logits": binary_cross_entropy_with_logits,
    "sigmoid_focal_loss": sigmoid_focal_loss,
    "softmax_focal_loss": softmax_focal_loss,
    "linear_cross_entropy": linear_cross_entropy,
    "class_weights": class_weights,
    "class_weights_from_labels": class_weights_from_labels,
    "sample_weights_from_labels": sample_weights_from_labels,
    "pos_weight_from_labels": pos_weight_from_labels,
}


class PrecisionExhausted(ArithmeticError):
    """No two successive working precisions agreed on every float64 bit."""


def _round(a, part) -> np.ndarray:
    """Float64 array of the value (``part=_v``) or tangent (``part=_d``) of exact numbers."""
    a = np.asarray(a, dtype=object)
    out = np.empty(a.shape, dtype=np.float64)
    for index in np.ndindex(a.shape):
        out[index] = to_float64(part(a[index]))
    return out


def _results(fn, args, grad_output, tangents, precision):
    if tangents:
        args = dict(args, **{k: Tangent(args[k], t) for k, t in tangents.items()})
    with mp.workprec(precision):
        output, grads = fn(**args, grad_output=grad_output)
        results = {"output": _round(output, _v)}
        for name, g in (grads or {}).items():
            results[f"grad_{name}"] = _round(g, _v)
        if tangents:
            results["jvp_output"] = _round(output, _d)
            for name, g in (grads or {}).items():
                results[f"hvp_{name}"] = _round(g, _d)
    return results


def _same_bits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and np.array_equal(a[k].view(np.uint64),
                                                     b[k].view(np.uint64))
        for k in a)


def evaluate(loss: str, args: dict, grad_output=None, tangents=None,
             merge_shards=False) -> dict:
    """The correctly rounded float64 results of ``loss`` on ``args``:
    ``{"output": ..., "grad_<argument>": ...}`` (gradients only with ``grad_output``);
    with ``tangents`` (``{argument: array}``) also ``"jvp_output"``, the directional
    derivative of the output, and ``"hvp_<argument>"``, that of the gradient (spec
    section 18).

    ``merge_shards``: ``input`` and ``target`` hold data-parallel shards on axis 0
    [DP-GLOBAL]; the result is that of the concatenated batch, the gradient stacked back.
    """
    fn = LOSSES[loss]
    if merge_shards:
        shape = np.shape(args["input"])
        args = dict(args, input=_merged(args["input"]), target=_merged(args["target"]))
    previous = _results(fn, args, grad_output, tangents, PRECISIONS[0])
    for precision in PRECISIONS[1:]:
        current = _results(fn, args, grad_output, tangents, precision)
        if _same_bits(previous, current):
            if merge_shards and "grad_input" in current:
                current["grad_input"] = current["grad_input"].reshape(shape)
            return current
        previous = current
    raise PrecisionExhausted(f"{loss}: results still change at {PRECISIONS[-1]} bits")


def _merged(a):
    a = np.asarray(a)
    return a.reshape((-1,) + a.shape[2:])
