"""The code reward: run the program of a completion against tests in the sandbox.

This is the rule reward the DeepSeek-R1 paper uses for code problems in reasoning RL: the
final program is compiled and run against predefined test cases. Here:

* the program is the last ```` ```python ```` fenced block (also ``py``/``python3``) of the
  answer: with ``answer_format="answer_tag"`` inside the last ``<answer>...</answer>`` of the
  summary after ``</think>``, with ``"auto"`` inside it when there is one and otherwise
  anywhere in the summary, with ``"boxed"`` (code cannot be boxed) anywhere in the summary.
  No block, or an unclosed one (a truncated generation), scores 0 without running anything;
* tests are either assert tests (Python code run after the program, in its namespace) or
  stdin/stdout tests (the program runs once per test with the input on stdin, and its stdout
  must equal the expected output up to trailing whitespace on each line and trailing blank
  lines);
* the reward is the fraction of tests passed (``scoring="fraction"``) or 1.0 only when all
  pass (``"all"``, the paper's pass/fail reward). A timeout, a crash, a syntax error or a
  memory error fails the test(s) involved.

Assert tests of one completion run in one process, and are judged here, not there
(:mod:`r1pipe.rewards.checks`): each ``assert`` is split into the expression the program must
compute (sent to the child) and the expected value (kept here); a small harness in the child
(``_HARNESS``) runs the program, evaluates each expression and sends its value back as JSON on
its own stdout, while the program's stdout goes to stderr. So a program that exits early,
prints fake reports, walks the harness's frames, replaces ``compile`` or ``exec`` or strips
the asserts earns nothing: none of that produces the expected values, which it never sees. A
program that hangs on test 3 keeps the credit of tests 1 and 2. Stdin/stdout tests compare the
program's stdout here as well. The sandbox (:mod:`r1pipe.rewards.sandbox`) keeps the program
from reading them anywhere else (the data files, the trainer's memory or command line).

The reference of a code problem (``Example.reference``, with ``task.verifier=code``) is JSON
text: the tests themselves, or an object ``{"tests": ..., "scoring": ..., "timeout_s": ...}``
that also carries how to run them (any :class:`~r1pipe.rewards.sandbox.SandboxConfig` field),
so that RL, rejection sampling and evaluation all run them the same way.

Example::

    tests = ["assert square(3) == 9", "assert square(-2) == 4"]
    program = "def square(x):\\n    return x * x\\n"
    completion = f"<think>x*x</think> <answer>```python\\n{program}```</answer>"
    code_reward(completion, tests)  # 1.0
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from r1pipe.rewards.checks import (
    ENCODER_SOURCE,
    Check,
    UnsupportedTest,
    compile_checks,
    judge,
    parse_report_line,
)
from r1pipe.rewards.parsing import ANSWER_FORMATS, ANSWER_OPEN, extract_answer, split_think
from r1pipe.rewards.sandbox import SandboxConfig, SandboxError, run_python

__all__ = [
    "SCORINGS",
    "TestRun",
    "TestSuite",
    "code_accuracy",
    "code_passes",
    "code_reward",
    "extract_program",
    "parse_reference",
    "parse_tests",
    "run_tests",
]

#: How passed tests become a reward: the passed fraction, or all-or-nothing.
SCORINGS = ("fraction", "all")

# Opening fence with a Python language tag, the code, then the next fence. Lazy, so each match
# is one block; an unclosed block does not match at all.
_FENCE_RE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)

# The trusted part of an assert-test run, in the child. It reads its input before any untrusted
# code runs and compiles every observation, gives the program an empty stdin, keeps the real
# stdout for its reports (the program's stdout goes to stderr), then runs the program and
# writes one JSON line ``[i, {"v": value}]`` (or ``{"e": error}``) per check. What is written
# is judged in the parent (``checks.judge``); the expected values are never here.
_HARNESS = (
    ENCODER_SOURCE
    + r"""
import json, os, sys

def _harness():
    payload = json.loads(sys.stdin.buffer.read())
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    report_fd = os.dup(1)
    os.dup2(2, 1)
    write, dumps, encode, bool_, exec_, eval_ = os.write, json.dumps, _encode, bool, exec, eval
    checks = [
        (compile(setup, "<setup>", "exec"), compile(observe, "<test>", "eval"), truth)
        for setup, observe, truth in payload["checks"]
    ]
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(compile(payload["program"], "<solution>", "exec"), namespace)
    except BaseException as e:
        print(f"program raised {type(e).__name__}: {e}", file=sys.stderr)
        return
    del payload
    for i, (setup, observe, truth) in enumerate(checks):
        try:
            exec_(setup, namespace)
            value = eval_(observe, namespace)
            report = {"v": encode(bool_(value) if truth else value)}
            line = dumps([i, report])
        except BaseException as e:
            print(f"check {i} raised {type(e).__name__}: {e}", file=sys.stderr)
            line = dumps([i, {"e": type(e).__name__}])
        write(report_fd, line.encode() + b"\n")

_harness()
"""
)

_SANDBOX_FIELDS = {f.name for f in fields(SandboxConfig)}


@dataclass(frozen=True)
class TestSuite:
    """The tests of one problem: assert tests or stdin/stdout tests, never both.

    Attributes:
        asserts: Python snippets run in order in the program's namespace, one per test.
        io: ``(stdin, expected stdout)`` per test.
    """

    __test__ = False  # not a pytest test class

    asserts: tuple[str, ...] = ()
    io: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.asserts) + len(self.io)


@dataclass(frozen=True)
class TestRun:
    """What :func:`run_tests` found.

    Attributes:
        passed: Tests passed.
        total: Tests in the suite (those skipped after a failure with ``scoring="all"``
            count as not passed).
        timeouts: Sandbox runs that hit the time limit.
    """

    __test__ = False

    passed: int
    total: int
    timeouts: int


def _split_assert_source(source: str) -> tuple[str, ...]:
    """One snippet per top-level ``assert``; other statements join the next assert (setup
    such as imports or helper functions)."""
    if not source.strip():
        raise ValueError("no tests")
    try:
        module = ast.parse(source)
    except SyntaxError as e:
        raise ValueError(f"assert tests do not parse: {e.msg} (line {e.lineno})") from None
    snippets: list[str] = []
    pending: list[str] = []
    for node in module.body:
        pending.append(ast.unparse(node))
        if isinstance(node, ast.Assert):
            snippets.append("\n".join(pending))
            pending = []
    if pending and snippets:
        snippets[-1] += "\n" + "\n".join(pending)
    return tuple(snippets) or (source,)  # no assert: compile_checks says why


def _io_pair(item: Any, where: str) -> tuple[str, str]:
    if not isinstance(item, dict) or set(item) != {"input", "output"}:
        raise ValueError(f"{where}: expected an object with exactly 'input' and 'output'")
    if not isinstance(item["input"], str) or not isinstance(item["output"], str):
        raise ValueError(f"{where}: 'input' and 'output' must be strings")
    return item["input"], item["output"]


def parse_tests(tests: Any) -> TestSuite:
    """Normalise the test formats code datasets use into a :class:`TestSuite`.

    Accepted: a string of Python assert tests (split into one test per top-level ``assert``);
    a list of strings, each one test (MBPP's ``test_list``); a list of ``{"input", "output"}``
    objects (stdin/stdout tests); an object ``{"inputs": [...], "outputs": [...]}`` (APPS'
    ``input_output``, without ``fn_name``).

    Raises:
        ValueError: For anything else, an empty suite, or a test that does not compile.
    """
    if isinstance(tests, str):
        suite = TestSuite(asserts=_split_assert_source(tests))
    elif isinstance(tests, dict):
        if "fn_name" in tests:
            raise ValueError("function-call tests (fn_name) are not supported; use asserts")
        if set(tests) != {"inputs", "outputs"}:
            raise ValueError(f"test object has keys {sorted(tests)}; expected inputs, outputs")
        inputs, outputs = tests["inputs"], tests["outputs"]
        if not isinstance(inputs, list) or not isinstance(outputs, list):
            raise ValueError("'inputs' and 'outputs' must be lists")
        if len(inputs) != len(outputs):
            raise ValueError(f"{len(inputs)} inputs but {len(outputs)} outputs")
        pairs = [{"input": i, "output": o} for i, o in zip(inputs, outputs, strict=True)]
        suite = TestSuite(io=tuple(_io_pair(p, f"test {k}") for k, p in enumerate(pairs)))
    elif isinstance(tests, list) and all(isinstance(t, str) for t in tests):
        suite = TestSuite(asserts=tuple(tests))
    elif isinstance(tests, list):
        suite = TestSuite(io=tuple(_io_pair(t, f"test {k}") for k, t in enumerate(tests)))
    else:
        raise ValueError(f"tests must be a string, a list or an object, not {type(tests).__name__}")
    if not len(suite):
        raise ValueError("no tests")
    for k, snippet in enumerate(suite.asserts):
        try:
            compile_checks(snippet)
        except UnsupportedTest as e:
            raise ValueError(f"test {k}: {e}") from None
    return suite


def parse_reference(reference: str) -> tuple[TestSuite, str, SandboxConfig]:
    """Read a code problem's reference: JSON text of the tests, or of an object with
    ``"tests"`` and optionally ``"scoring"`` and :class:`SandboxConfig` fields.

    Returns:
        ``(suite, scoring, sandbox config)``.

    Raises:
        ValueError: If it is not such JSON, names an unknown key, or the tests are invalid.

    Example:
        >>> suite, scoring, sandbox = parse_reference(
        ...     '{"tests": "assert f(1) == 1", "scoring": "all", "timeout_s": 2}')
        >>> suite.asserts, scoring, sandbox.timeout_s
        (('assert f(1) == 1',), 'all', 2)
    """
    try:
        spec = json.loads(reference)
    except (TypeError, json.JSONDecodeError):
        raise ValueError("a code reference must be JSON text of its tests") from None
    options: dict[str, Any] = {}
    if isinstance(spec, dict) and "tests" in spec:
        options = {k: v for k, v in spec.items() if k != "tests"}
        spec = spec["tests"]
    scoring = options.pop("scoring", "fraction")
    if scoring not in SCORINGS:
        raise ValueError(f"unknown scoring {scoring!r}; expected one of {SCORINGS}")
    unknown = sorted(set(options) - _SANDBOX_FIELDS)
    if unknown:
        raise ValueError(f"unknown keys {unknown} in a code reference")
    try:
        sandbox = SandboxConfig(**options)
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad sandbox settings in a code reference: {e}") from None
    return parse_tests(spec), scoring, sandbox


def extract_program(completion: str, answer_format: str = "answer_tag") -> str | None:
    """The program of a completion: the last Python fenced block of its answer (see the
    module docstring for where that is per ``answer_format``), or None.

    Example:
        >>> extract_program("<think>```python\\nx = 1\\n```</think> "
        ...                 "<answer>```python\\nprint(2)\\n```</answer>")
        'print(2)\\n'
    """
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(
            f"unknown answer_format {answer_format!r}; expected one of {ANSWER_FORMATS}"
        )
    _, summary = split_think(completion)
    if answer_format == "answer_tag" or (answer_format == "auto" and ANSWER_OPEN in summary):
        answer = extract_answer(summary, "answer_tag")
        if answer is None:
            return None
    else:
        answer = summary
    return _last_block(answer)


def _last_block(text: str) -> str | None:
    blocks = _FENCE_RE.findall(text)
    if not blocks or not blocks[-1].strip():
        return None
    return blocks[-1]


def _normalize_output(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def _run_asserts(program: str, snippets: Sequence[str], sandbox: SandboxConfig) -> TestRun:
    # Each test is one or more checks (a snippet with two asserts passes when both do).
    checks: list[Check] = []
    owner: list[int] = []
    for k, snippet in enumerate(snippets):
        for check in compile_checks(snippet):
            checks.append(check)
            owner.append(k)
    payload = {
        "program": program,
        "checks": [[c.setup, c.observe, c.kind == "truth"] for c in checks],
    }
    result = run_python(_HARNESS, stdin=json.dumps(payload), config=sandbox)
    if result.status == "error":
        raise SandboxError(result.error)
    reports: dict[int, Any] = {}
    if not result.stdout_truncated:
        for line in result.stdout.splitlines():
            parsed = parse_report_line(line)
            if parsed is not None and 0 <= parsed[0] < len(checks):
                reports.setdefault(parsed[0], parsed[1])  # the first report of a check counts
    failed_tests = {owner[i] for i, c in enumerate(checks) if not judge(c, reports.get(i))}
    timeouts = int(result.status == "timeout")
    return TestRun(len(snippets) - len(failed_tests), len(snippets), timeouts)


def _run_io(
    program: str, pairs: Sequence[tuple[str, str]], stop_on_failure: bool, sandbox: SandboxConfig
) -> TestRun:
    passed = timeouts = 0
    for stdin, expected in pairs:
        result = run_python(program, stdin=stdin, config=sandbox)
        if result.status == "error":
            raise SandboxError(result.error)
        timeouts += result.status == "timeout"
        ok = (
            result.status == "passed"
            and not result.stdout_truncated
            and _normalize_output(result.stdout) == _normalize_output(expected)
        )
        passed += ok
        if not ok and stop_on_failure:
            break
    return TestRun(passed, len(pairs), timeouts)


def run_tests(
    program: str,
    tests: TestSuite,
    *,
    stop_on_failure: bool = False,
    sandbox: SandboxConfig | None = None,
) -> TestRun:
    """Run ``program`` against ``tests`` in the sandbox.

    Args:
        program: Python source (trusted or not: it only ever runs in the sandbox).
        tests: The suite (:func:`parse_tests`).
        stop_on_failure: Stop at the first failed stdin/stdout test (enough for all-or-nothing
            scoring); the assert tests of a program run in one process and all report.
        sandbox: Limits of each sandbox run: one for all assert tests, one per stdin/stdout
            test.

    Raises:
        SandboxError: The sandbox could not start the program.
    """
    sandbox = sandbox or SandboxConfig()
    if tests.asserts:
        return _run_asserts(program, tests.asserts, sandbox)
    return _run_io(program, tests.io, stop_on_failure, sandbox)


def code_reward(
    completion: str,
    tests: Any,
    *,
    answer_format: str = "answer_tag",
    scoring: str = "fraction",
    sandbox: SandboxConfig | None = None,
) -> float:
    """Score a completion's program by the tests it passes in the sandbox.

    Args:
        completion: The generated text.
        tests: A :class:`TestSuite` or anything :func:`parse_tests` accepts.
        answer_format: Where the program is (see :func:`extract_program`).
        scoring: ``"fraction"`` (passed / total) or ``"all"`` (1.0 only if every test
            passes).
        sandbox: Limits and runner (:class:`SandboxConfig`); None uses the defaults.

    Returns:
        The reward in [0, 1]; 0.0 when the completion has no program.

    Raises:
        ValueError: Unknown ``scoring``/``answer_format``, or invalid tests.
        SandboxError: The sandbox could not start the program (a setup problem, not a
            property of the completion).
    """
    if scoring not in SCORINGS:
        raise ValueError(f"unknown scoring {scoring!r}; expected one of {SCORINGS}")
    suite = tests if isinstance(tests, TestSuite) else parse_tests(tests)
    program = extract_program(completion, answer_format)
    if program is None:
        return 0.0
    run = run_tests(program, suite, stop_on_failure=scoring == "all", sandbox=sandbox)
    if scoring == "all":
        return 1.0 if run.passed == run.total else 0.0
    return run.passed / run.total


def code_accuracy(completion: str, reference: str, answer_format: str = "answer_tag") -> float:
    """The accuracy reward of a code problem: :func:`code_reward` with the tests, scoring and
    sandbox settings of its reference (:func:`parse_reference`).

    Raises:
        ValueError: The reference is not a valid test spec (a data problem).
        SandboxError: The sandbox could not start the program.
    """
    suite, scoring, sandbox = parse_reference(reference)
    return code_reward(
        completion, suite, answer_format=answer_format, scoring=scoring, sandbox=sandbox
    )


def code_passes(answer: str, reference: str) -> bool:
    """Whether the program in an extracted answer (the last Python block of ``answer``)
    passes every test of ``reference``; the correctness used by evaluation (pass@k)."""
    suite, _, sandbox = parse_reference(reference)
    program = _last_block(answer)
    if program is None:
        return False
    run = run_tests(program, suite, stop_on_failure=True, sandbox=sandbox)
    return run.passed == run.total
