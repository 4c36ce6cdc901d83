"""Assert tests judged outside the untrusted process.

A model's program runs in the sandbox; the verdict of its tests must not depend on anything
that process says about itself. So an assert test such as ``assert f([3, 1]) == [1, 3]`` is
split, here in the trainer, into:

* the *observation* ``f([3, 1])``: an expression the sandbox evaluates in the program's
  namespace; its value comes back as JSON (:data:`ENCODER_SOURCE`, run in the child, and
  :func:`decode` here), never pickle;
* the *expected* value ``[1, 3]``: evaluated here, by a small evaluator of constants
  (:func:`constant_value`), and never sent to the child;
* the comparison, made here on the decoded value.

The child can then lie about nothing but what its program returns: a program that walks the
harness's frames, replaces ``compile``/``exec``, strips asserts or exits early just returns
nothing, or a wrong value. Values come back with their exact types (a ``bool`` is not an
``int``, a ``tuple`` is not a ``list``) and only built-in types are accepted, so an object whose
``__eq__`` is always true cannot be returned.

Forms judged (one per top-level ``assert``; statements before it, e.g. imports or helpers, run
in the child first as that test's setup):

* ``assert OBS <op> EXPECTED`` (or ``EXPECTED <op> OBS``) with one of ``== != < <= > >= in
  not in``, or ``is``/``is not`` with ``None``/``True``/``False``;
* ``assert math.isclose(OBS, EXPECTED, rel_tol=..., abs_tol=...)`` (``isclose`` too);
* ``assert abs(OBS - EXPECTED) <op> TOL`` (either order inside ``abs``);
* ``assert OBS`` and ``assert not OBS`` (the child sends ``bool(OBS)``).

``EXPECTED`` must be a constant: literals and displays, arithmetic on them, ``math``
constants and functions, and ``set``/``frozenset``/``tuple``/``list``/``dict``/``sorted``/
``float``/``int``/``str``/``complex``/``bool``/``abs``/``round``/``range``/``len`` of
constants. Anything else (an expected value computed by test code, a ``check(candidate)``
function) cannot be judged without running test code beside the program, and is refused when
the tests are read, naming the test.

Example::

    >>> [c.observe for c in compile_checks("import math\\nassert f(2) == 4\\nassert not g()")]
    ['f(2)', 'g()']
    >>> judge(compile_checks("assert f(2) == (4, 5)")[0], {"v": {"t": [4, 5]}})
    True
"""

from __future__ import annotations

import ast
import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ENCODER_SOURCE",
    "Check",
    "UnsupportedTest",
    "compile_checks",
    "constant_value",
    "decode",
    "judge",
]


class UnsupportedTest(ValueError):
    """An assert whose verdict cannot be computed outside the program's process."""


_COMPARE: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
    ast.In: ("in", lambda a, b: a in b),
    ast.NotIn: ("not in", lambda a, b: a not in b),
    ast.Is: ("is", operator.is_),
    ast.IsNot: ("is not", operator.is_not),
}
_OPS = {name: fn for name, fn in _COMPARE.values()}
_SINGLETONS = (None, True, False)


@dataclass(frozen=True)
class Check:
    """One test, ready to run: what the child evaluates and how the parent judges it.

    Attributes:
        setup: Statements the child runs before the observation ("" for none).
        observe: Expression the child evaluates in the program's namespace.
        kind: ``"compare"``, ``"isclose"``, ``"abs"`` (``abs(obs - expected) op tol``) or
            ``"truth"`` (the child sends ``bool(obs)``).
        op: The comparison (``"=="``, ``"in"``, ...); for ``"truth"``: ``"true"`` or
            ``"false"``.
        expected: The trusted expected value (never sent to the child).
        observed_left: Whether the observation is the left operand of ``op``.
        options: ``rel_tol``/``abs_tol`` of ``isclose``; ``tol`` of ``"abs"``.
        source: The test as written, for messages.
    """

    setup: str
    observe: str
    kind: str
    op: str
    expected: Any = None
    observed_left: bool = True
    options: dict = field(default_factory=dict)
    source: str = ""


# -- the evaluator of expected values --------------------------------------------------------

_MAX_SEQUENCE = 1_000_000
_MAX_POW_BITS = 10_000


def _safe_range(*args: int) -> list[int]:
    r = range(*args)
    if len(r) > _MAX_SEQUENCE:
        raise UnsupportedTest(f"range of {len(r)} items")
    return list(r)


def _safe_pow(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and b > 0 and a not in (0, 1, -1):
        if b * max(abs(a).bit_length(), 1) > _MAX_POW_BITS:
            raise UnsupportedTest("a power too large to evaluate")
    return a**b


def _safe_mul(a: Any, b: Any) -> Any:
    for seq, n in ((a, b), (b, a)):
        if isinstance(seq, str | bytes | list | tuple) and isinstance(n, int):
            if len(seq) * n > _MAX_SEQUENCE:
                raise UnsupportedTest("a repeated sequence too large to evaluate")
    return a * b


_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _safe_mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _safe_pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_FUNCTIONS: dict[str, Callable] = {
    "set": set,
    "frozenset": frozenset,
    "tuple": tuple,
    "list": list,
    "dict": dict,
    "sorted": sorted,
    "float": float,
    "int": int,
    "str": str,
    "complex": complex,
    "bool": bool,
    "abs": abs,
    "round": round,
    "range": _safe_range,
    "len": len,
}
_MATH_NAMES = (
    "pi e inf nan tau sqrt exp log log2 log10 floor ceil fabs sin cos tan asin acos atan "
    "atan2 hypot radians degrees isqrt"
).split()


def constant_value(node: ast.expr) -> Any:
    """The value of an expression made only of constants (see the module docstring).

    Raises:
        UnsupportedTest: The expression is not such a constant.
    """
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        items = [constant_value(e) for e in node.elts]
        return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise UnsupportedTest("a ** unpacking in a dict")
        pairs = zip(node.keys, node.values, strict=True)
        return {constant_value(k): constant_value(v) for k, v in pairs}
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](constant_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](constant_value(node.left), constant_value(node.right))
    if isinstance(node, ast.Attribute) and _is_math(node.value) and node.attr in _MATH_NAMES:
        value = getattr(math, node.attr)
        if not callable(value):
            return value
    if isinstance(node, ast.Call):
        function = _constant_function(node.func)
        args = [constant_value(a) for a in node.args]
        if any(k.arg is None for k in node.keywords):
            raise UnsupportedTest("a ** unpacking in a call")
        kwargs = {k.arg: constant_value(k.value) for k in node.keywords}
        try:
            return function(*args, **kwargs)
        except UnsupportedTest:
            raise
        except Exception as e:  # e.g. float("x"), math.sqrt(-1)
            raise UnsupportedTest(f"evaluating it raised {type(e).__name__}: {e}") from None
    raise UnsupportedTest(f"{ast.unparse(node)!r} is not a constant")


def _is_math(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "math"


def _constant_function(node: ast.expr) -> Callable:
    if isinstance(node, ast.Name) and node.id in _FUNCTIONS:
        return _FUNCTIONS[node.id]
    if isinstance(node, ast.Attribute) and _is_math(node.value) and node.attr in _MATH_NAMES:
        value = getattr(math, node.attr)
        if callable(value):
            return value
    raise UnsupportedTest(f"{ast.unparse(node)!r} is not a function of constants")


def _try_constant(node: ast.expr) -> tuple[bool, Any]:
    try:
        return True, constant_value(node)
    except (UnsupportedTest, ArithmeticError, TypeError, ValueError):
        return False, None


# -- from assert statements to checks ---------------------------------------------------------


def _is_isclose(node: ast.expr) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Name):
        return func.id == "isclose"
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "isclose"
        and isinstance(func.value, ast.Name)
        and func.value.id in ("math", "cmath")
    )


def _observed_and_expected(a: ast.expr, b: ast.expr) -> tuple[ast.expr, Any, bool] | None:
    """(observed node, expected value, observed is left) or None if neither is constant."""
    b_const, b_value = _try_constant(b)
    if b_const:
        return a, b_value, True
    a_const, a_value = _try_constant(a)
    if a_const:
        return b, a_value, False
    return None


def _check_of(test: ast.expr, setup: str, source: str) -> Check:
    def check(observe: ast.expr, kind: str, op: str, **kw: Any) -> Check:
        return Check(setup, ast.unparse(observe), kind, op, source=source, **kw)

    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        op_name, _ = _COMPARE[type(test.ops[0])]
        left, right = test.left, test.comparators[0]
        # abs(OBS - C) < TOL: the child must not see C, so it sends OBS.
        if (
            isinstance(left, ast.Call)
            and isinstance(left.func, ast.Name)
            and left.func.id == "abs"
            and len(left.args) == 1
            and not left.keywords
            and isinstance(left.args[0], ast.BinOp)
            and isinstance(left.args[0].op, ast.Sub)
            and op_name in ("<", "<=")
        ):
            ok, tol = _try_constant(right)
            split = _observed_and_expected(left.args[0].left, left.args[0].right)
            if ok and split is not None:
                observed, expected, _ = split
                return check(observed, "abs", op_name, expected=expected, options={"tol": tol})
        split = _observed_and_expected(left, right)
        if split is None:
            raise UnsupportedTest("neither side of the comparison is a constant")
        observed, expected, observed_left = split
        if op_name in ("is", "is not") and not any(expected is s for s in _SINGLETONS):
            raise UnsupportedTest(f"'{op_name}' is judged only against None, True or False")
        return check(observed, "compare", op_name, expected=expected, observed_left=observed_left)
    if _is_isclose(test):
        if len(test.args) != 2:
            raise UnsupportedTest("isclose needs exactly two positional arguments")
        split = _observed_and_expected(test.args[0], test.args[1])
        if split is None:
            raise UnsupportedTest("neither argument of isclose is a constant")
        options = {}
        for keyword in test.keywords:
            if keyword.arg not in ("rel_tol", "abs_tol"):
                raise UnsupportedTest(f"isclose keyword {keyword.arg!r}")
            options[keyword.arg] = constant_value(keyword.value)
        observed, expected, _ = split
        return check(observed, "isclose", "isclose", expected=expected, options=options)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return check(test.operand, "truth", "false")
    if isinstance(test, ast.Compare):
        raise UnsupportedTest("a chained comparison")
    return check(test, "truth", "true")


class _Rename(ast.NodeTransformer):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def visit_Name(self, node: ast.Name) -> ast.Name:
        return ast.Name(self.new, node.ctx) if node.id == self.old else node


def _inline_check_functions(body: list[ast.stmt]) -> list[ast.stmt]:
    """HumanEval-style tests, ``def check(candidate): assert candidate(...) == ...`` and then
    ``check(f)``, with the asserts of ``check`` written out for ``f``. Only a ``check`` whose
    body is asserts (and a docstring) is inlined; any other stays as it is, and is refused."""
    functions = {
        node.name: node
        for node in body
        if isinstance(node, ast.FunctionDef)
        and len(node.args.args) == 1
        and not node.decorator_list
        and all(
            isinstance(s, ast.Assert)
            or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
            for s in node.body
        )
    }
    out: list[ast.stmt] = []
    for node in body:
        call = node.value if isinstance(node, ast.Expr) else None
        if node in functions.values():
            continue
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id in functions
            and len(call.args) == 1
            and isinstance(call.args[0], ast.Name)
            and not call.keywords
        ):
            function = functions[call.func.id]
            rename = _Rename(function.args.args[0].arg, call.args[0].id)
            out += [rename.visit(s) for s in function.body if isinstance(s, ast.Assert)]
        else:
            out.append(node)
    return out


def compile_checks(source: str) -> list[Check]:
    """The checks of assert-test source: one per top-level ``assert``, with the statements
    before it as its setup (statements after the last assert are dropped: nothing judges
    them).

    Raises:
        UnsupportedTest: A test that cannot be judged outside the program's process (the
            message names it), source with no top-level assert, or source that does not
            parse.
    """
    try:
        module = ast.parse(source)
    except SyntaxError as e:
        raise UnsupportedTest(f"does not parse: {e.msg} (line {e.lineno})") from None
    checks = []
    pending: list[str] = []
    for node in _inline_check_functions(module.body):
        if not isinstance(node, ast.Assert):
            pending.append(ast.unparse(node))
            continue
        text = ast.unparse(node)
        try:
            checks.append(_check_of(node.test, "\n".join(pending), text))
        except UnsupportedTest as e:
            raise UnsupportedTest(f"{text!r}: {e}") from None
        pending = []
    if not checks:
        raise UnsupportedTest(
            "no top-level assert (tests such as check(candidate) run test code beside the "
            "program, which could then read the expected values; write one assert per test)"
        )
    return checks


# -- values from the child ---------------------------------------------------------------------

#: Source of ``_encode(value)`` for the child: JSON-able data with exact built-in types only.
#: Tags: {"t": [...]} tuple, {"s": [...]} set, {"fs": [...]} frozenset, {"d": [[k, v], ...]}
#: dict, {"c": [re, im]} complex, {"f": "nan"|"inf"|"-inf"} float, {"b": "hex"} bytes.
ENCODER_SOURCE = r"""
def _encode(value, depth=0):
    kind = type(value)
    if depth > 64:
        raise ValueError("nested too deeply")
    if value is None or kind is bool or kind is int or kind is str:
        return value
    if kind is float:
        return value if value == value and abs(value) != float("inf") else {"f": repr(value)}
    if kind is list:
        return [_encode(v, depth + 1) for v in value]
    tags = {tuple: "t", set: "s", frozenset: "fs"}
    if kind in tags:
        return {tags[kind]: [_encode(v, depth + 1) for v in value]}
    if kind is dict:
        return {"d": [[_encode(k, depth + 1), _encode(v, depth + 1)] for k, v in value.items()]}
    if kind is complex:
        return {"c": [_encode(value.real), _encode(value.imag)]}
    if kind is bytes:
        return {"b": value.hex()}
    raise TypeError(f"cannot send a {kind.__name__} value back")
"""

_DECODERS: dict[str, Callable[[Any], Any]] = {
    "t": lambda v: tuple(decode(x) for x in v),
    "s": lambda v: {decode(x) for x in v},
    "fs": lambda v: frozenset(decode(x) for x in v),
    "d": lambda v: {decode(k): decode(x) for k, x in v},
    "c": lambda v: complex(decode(v[0]), decode(v[1])),
    "f": lambda v: float({"nan": "nan", "inf": "inf", "-inf": "-inf"}[v]),
    "b": bytes.fromhex,
}


def decode(value: Any) -> Any:
    """The Python value of what the child's ``_encode`` produced (parsed JSON).

    Raises:
        ValueError: Not something ``_encode`` produces.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict) and len(value) == 1:
        ((tag, inner),) = value.items()
        if tag in _DECODERS:
            try:
                return _DECODERS[tag](inner)
            except (TypeError, KeyError, IndexError, ValueError) as e:
                raise ValueError(f"bad {tag!r} value: {e}") from None
    raise ValueError("not an encoded value")


def judge(check: Check, report: Any) -> bool:
    """Whether ``report`` (the child's parsed JSON for this check: ``{"v": encoded value}`` or
    ``{"e": "error"}``) passes ``check``. Anything malformed fails; nothing raises."""
    if not isinstance(report, dict) or set(report) != {"v"}:
        return False
    try:
        observed = decode(report["v"])
        if check.kind == "truth":
            return type(observed) is bool and observed is (check.op == "true")
        if check.kind == "isclose":
            return bool(math.isclose(observed, check.expected, **check.options))
        if check.kind == "abs":
            difference = abs(observed - check.expected)
            return bool(_OPS[check.op](difference, check.options["tol"]))
        a, b = (observed, check.expected) if check.observed_left else (check.expected, observed)
        return bool(_OPS[check.op](a, b))
    except (ValueError, TypeError, ArithmeticError, RecursionError):
        return False


def parse_report_line(line: str) -> tuple[int, Any] | None:
    """``(index, report)`` of one line the child wrote (``[index, report]`` JSON), or None."""
    try:
        item = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if (
        isinstance(item, list)
        and len(item) == 2
        and type(item[0]) is int
        and isinstance(item[1], dict)
    ):
        return item[0], item[1]
    return None
