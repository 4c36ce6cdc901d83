"""Assert tests judged in the trainer (r1pipe/rewards/checks.py).

The reference is Python itself: the verdict of each test must equal what ``exec`` of the
program followed by the assert gives in this process (trusted programs only, written here),
over the shipped problems and over hand-written tests of every supported form.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
from sandboxhelpers import sandbox_python

from r1pipe.rewards.checks import (
    ENCODER_SOURCE,
    UnsupportedTest,
    compile_checks,
    constant_value,
    decode,
    judge,
)
from r1pipe.rewards.code import parse_tests, run_tests
from r1pipe.rewards.sandbox import SandboxConfig

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def python_verdicts(program: str, snippets: tuple[str, ...]) -> list[bool]:
    """Per test: does ``assert`` pass when Python runs the program, then the test?"""
    verdicts = []
    for snippet in snippets:
        namespace: dict = {"__name__": "solution"}
        try:
            exec(program, namespace)
            exec(snippet, namespace)
            verdicts.append(True)
        except Exception:
            verdicts.append(False)
    return verdicts


def sandbox_verdicts(program: str, snippets: tuple[str, ...], config: SandboxConfig) -> list[bool]:
    return [
        run_tests(program, parse_tests([snippet]), sandbox=config).passed == 1
        for snippet in snippets
    ]


@pytest.fixture(scope="module")
def config() -> SandboxConfig:
    return SandboxConfig(python=sandbox_python(), timeout_s=20)


# Wrong programs: each problem's function replaced by one that returns something close.
MUTANTS = [
    "def {name}(*a):\n    return None",
    "def {name}(*a):\n    return 0",
    "def {name}(*a):\n    return list(a[0]) if a and isinstance(a[0], (list, str)) else True",
]


def _problems():
    rows = [json.loads(line) for line in (ASSETS / "code_sample.jsonl").open()]
    return [r for r in rows if not isinstance(r["tests"], list) or isinstance(r["tests"][0], str)]


def test_shipped_problems_judged_as_python_judges_them(config):
    problems = _problems()
    assert len(problems) == 10
    seen_wrong = 0
    for row in problems:
        suite = parse_tests(row["tests"])
        name = ast.parse(row["solution"]).body[0].name
        for program in [row["solution"], *(m.format(name=name) for m in MUTANTS)]:
            expected = python_verdicts(program, suite.asserts)
            assert sandbox_verdicts(program, suite.asserts, config) == expected, (
                row["id"],
                program,
            )
            seen_wrong += expected.count(False)
    assert seen_wrong > 30  # the mutants do fail tests, so both verdicts are exercised


FORMS = [
    # (program, test) over every supported form, passing and failing
    ("def f(x):\n    return (x, x)", "assert f(1) == (1, 1)"),
    ("def f(x):\n    return [x, x]", "assert f(1) == (1, 1)"),  # list is not a tuple
    ("def f(x):\n    return {x: [x]}", "assert f(2) == {2: [2]}"),
    ("def f(x):\n    return {x, -x}", "assert f(2) == {2, -2}"),
    ("def f(x):\n    return frozenset({x})", "assert f(2) == frozenset([2])"),
    ("def f(x):\n    return x / 3", "assert f(1) == 1 / 3"),
    ("def f(x):\n    return 0.1 + 0.2", "assert f(1) == 0.3"),  # exact float semantics
    ("def f(x):\n    return 0.1 + 0.2", "assert math.isclose(f(1), 0.3, rel_tol=1e-9)"),
    ("def f(x):\n    return 0.1 + 0.2", "assert isclose(0.3, f(1))"),
    ("def f(x):\n    return 3.14159", "assert abs(f(0) - math.pi) < 1e-3"),
    ("def f(x):\n    return 3.14159", "assert abs(math.pi - f(0)) <= 1e-9"),
    ("def f(x):\n    return float('nan')", "assert f(0) == float('nan')"),
    ("def f(x):\n    return float('inf')", "assert f(0) == math.inf"),
    ("def f(x):\n    return 1", "assert f(0) == True"),  # 1 == True in Python
    ("def f(x):\n    return 1", "assert f(0) is True"),
    ("def f(x):\n    return None", "assert f(0) is None"),
    ("def f(x):\n    return 0", "assert f(0) is not None"),
    ("def f(x):\n    return [1, 2]", "assert 2 in f(0)"),
    ("def f(x):\n    return [1, 2]", "assert 3 not in f(0)"),
    ("def f(x):\n    return 'ab'", "assert f(0) in 'xaby'"),
    ("def f(x):\n    return 5", "assert f(0) > 4"),
    ("def f(x):\n    return 5", "assert 6 <= f(0)"),
    ("def f(x):\n    return [3, 1]", "assert sorted(f(0)) == [1, 3]"),
    ("def f(x):\n    return [3, 1]", "assert set(f(0)) == set([1, 3])"),
    ("def f(x):\n    return 'a'", "assert f(0) == 'a' * 3"),
    ("def f(x):\n    return 2 ** 70", "assert f(0) == 2 ** 70"),
    ("def f(x):\n    return -7", "assert f(0) == -(3 + 4)"),
    ("def f(x):\n    return 3 + 4j", "assert f(0) == complex(3, 4)"),
    ("def f(x):\n    return b'ab'", "assert f(0) == b'ab'"),
    ("def f(x):\n    return list(range(4))", "assert f(0) == list(range(4))"),
    ("def f(x):\n    return []", "assert f(0)"),
    ("def f(x):\n    return []", "assert not f(0)"),
    ("def f(x):\n    return 'x'", "assert f(0) != 'y'"),
    ("def f(x):\n    raise ValueError", "assert f(0) == 1"),
    ("import math\ndef f(x):\n    return math.sqrt(x)", "import math\nassert f(4) == math.sqrt(4)"),
    ("def f(x):\n    return len(x)", "assert f('abc') == len('abc')"),
    ("def f(x):\n    return round(x, 1)", "assert f(2.25) == round(2.25, 1)"),
]


@pytest.mark.parametrize("program,test", FORMS)
def test_every_form_judged_as_python_judges_it(program, test, config):
    want = python_verdicts(f"import math\nfrom math import isclose\n{program}", (test,))
    got = sandbox_verdicts(f"import math\n{program}", (test,), config)
    assert got == want


def test_objects_that_fake_equality_are_not_values():
    """A subclass of a built-in, or any object, does not travel back: its __eq__ never runs."""
    namespace: dict = {}
    exec(ENCODER_SOURCE, namespace)
    encode = namespace["_encode"]

    class Always(int):
        def __eq__(self, other):
            return True

    for value in [Always(3), object(), [1, Always(2)], {1: object()}]:
        with pytest.raises(TypeError):
            encode(value)
    assert decode(json.loads(json.dumps(encode({(1, 2): {3.5, None}})))) == {(1, 2): {3.5, None}}
    assert math.isnan(decode(json.loads(json.dumps(encode(float("nan"))))))


def test_malformed_reports_fail_and_never_raise():
    check = compile_checks("assert f(1) == 1")[0]
    for report in [
        None,
        {},
        {"v": 1, "x": 2},
        {"e": "ValueError"},
        {"v": {"zz": 1}},
        {"v": {"s": [[1]]}},
        {"v": {"f": "lots"}},
        [1],
        {"v": {"t": 5}},
    ]:
        assert judge(check, report) is False
    assert judge(check, {"v": 1}) is True


def test_expected_values_never_reach_the_child():
    checks = compile_checks(
        "assert f([9, 8]) == [8123, 9456]\nassert abs(g(2) - 7.25) < 0.001\n"
        "assert math.isclose(h(1), 3.875)\nassert 4242 in k(0)"
    )
    sent = json.dumps([[c.setup, c.observe, c.kind == "truth"] for c in checks])
    for value in ("8123", "9456", "7.25", "3.875", "4242"):
        assert value not in sent


def test_unsupported_tests_are_refused_naming_the_test():
    for source, reason in [
        ("assert f(1) == g(2)", "neither side"),
        ("x = 5\nassert f(1) == x", "neither side"),
        ("assert 1 < f(1) < 3", "chained"),
        ("assert f(1) is [1]", "None, True or False"),
        ("def check(c):\n    for i in range(3):\n        assert c(i) == i\ncheck(f)", "no top"),
        ("print(1)", "no top-level assert"),
        ("assert f(1) == 2 ** 100000", "neither side"),
    ]:
        with pytest.raises(UnsupportedTest, match=reason):
            compile_checks(source)
    with pytest.raises(ValueError, match="test 1: 'assert f"):
        parse_tests(["assert f(1) == 1", "assert f(2) == g(2)"])


def test_humaneval_check_functions_are_inlined(config):
    tests = (
        "METADATA = {'author': 'x'}\n"
        "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(-3) == 9\n"
        "check(square)"
    )
    checks = compile_checks(tests)
    assert [c.observe for c in checks] == ["square(2)", "square(-3)"]
    right, wrong = "def square(x):\n    return x * x", "def square(x):\n    return 4"
    assert run_tests(right, parse_tests(tests), sandbox=config).passed == 1
    assert run_tests(wrong, parse_tests(tests), sandbox=config).passed == 0


def test_constant_evaluator_refuses_names_and_huge_values():
    for source in ["x", "f(1)", "open('x')", "__import__('os')", "'a' * 10**9", "range(10**9)"]:
        with pytest.raises(UnsupportedTest):
            constant_value(ast.parse(source, mode="eval").body)
    assert constant_value(ast.parse("sorted({3, 1}) + [math.e]", mode="eval").body) == [
        1,
        3,
        math.e,
    ]
