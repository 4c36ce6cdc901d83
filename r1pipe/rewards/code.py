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

Assert tests of one completion run in one process: a small trusted harness (``_HARNESS``)
executes the program, then each test, and reports each passed test on its own stdout with a
random per-run token, while the program's own stdout is sent to stderr. A test counts only when
its report arrives, so a program that exits early (``sys.exit(0)`` or ``os._exit(0)`` before
the asserts run) or prints fake reports gets no credit, and a program that hangs on test 3
keeps the credit of tests 1 and 2. This is not proof against a hostile program: the token is in
the same process and could be found by introspection, and a returned object whose ``__eq__``
is always true passes ``assert f(x) == y``.

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
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

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

# The trusted part of an assert-test run. It reads its input before any untrusted code runs,
# gives the program an empty stdin, keeps the real stdout for its reports (the program's
# stdout goes to stderr), and reports "TOKEN ok I" after test I passes.
_HARNESS = r"""
import builtins, json, os, sys

def _harness():
    payload = json.loads(sys.stdin.buffer.read())
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    report_fd = os.dup(1)
    os.dup2(2, 1)
    prefix = payload["token"].encode() + b" ok "
    write = os.write
    namespace = {"__name__": "solution", "__builtins__": builtins}
    try:
        exec(compile(payload["program"], "<solution>", "exec"), namespace)
    except BaseException as e:
        print(f"program raised {type(e).__name__}: {e}", file=sys.stderr)
        return
    for i, test in enumerate(payload["tests"]):
        try:
            exec(compile(test, f"<test {i}>", "exec"), namespace)
        except BaseException as e:
            print(f"test {i} raised {type(e).__name__}: {e}", file=sys.stderr)
            if payload["stop_on_failure"]:
                return
            continue
        write(report_fd, prefix + str(i).encode() + b"\n")

_harness()
"""

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
    such as imports or helper functions), trailing ones the last. Source without a top-level
    assert (e.g. ``def check(f): ...`` then ``check(f)``) is one test."""
    if not source.strip():
        raise ValueError("no tests")
    try:
        module = ast.parse(source)
    except SyntaxError as e:
        raise ValueError(f"assert tests do not parse: {e.msg} (line {e.lineno})") from None
    if not any(isinstance(node, ast.Assert) for node in module.body):
        return (source,)
    snippets: list[str] = []
    pending: list[str] = []
    for node in module.body:
        pending.append(ast.unparse(node))
        if isinstance(node, ast.Assert):
            snippets.append("\n".join(pending))
            pending = []
    if pending:
        snippets[-1] += "\n" + "\n".join(pending)
    return tuple(snippets)


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
        for k, test in enumerate(tests):
            try:
                compile(test, f"<test {k}>", "exec")
            except SyntaxError as e:
                raise ValueError(f"test {k} does not parse: {e.msg}") from None
        suite = TestSuite(asserts=tuple(tests))
    elif isinstance(tests, list):
        suite = TestSuite(io=tuple(_io_pair(t, f"test {k}") for k, t in enumerate(tests)))
    else:
        raise ValueError(f"tests must be a string, a list or an object, not {type(tests).__name__}")
    if not len(suite):
        raise ValueError("no tests")
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


def _run_asserts(
    program: str, snippets: Sequence[str], stop_on_failure: bool, sandbox: SandboxConfig
) -> TestRun:
    token = secrets.token_hex(16)
    payload = {
        "token": token,
        "program": program,
        "tests": list(snippets),
        "stop_on_failure": stop_on_failure,
    }
    result = run_python(_HARNESS, stdin=json.dumps(payload), config=sandbox)
    if result.status == "error":
        raise SandboxError(result.error)
    passed: set[int] = set()
    prefix = token + " ok "
    for line in result.stdout.splitlines():
        if line.startswith(prefix) and line[len(prefix) :].isdigit():
            index = int(line[len(prefix) :])
            if index < len(snippets):
                passed.add(index)
    return TestRun(len(passed), len(snippets), int(result.status == "timeout"))


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
        stop_on_failure: Stop at the first failed test (enough for all-or-nothing scoring).
        sandbox: Limits of each sandbox run: one for all assert tests, one per stdin/stdout
            test.

    Raises:
        SandboxError: The sandbox could not start the program.
    """
    sandbox = sandbox or SandboxConfig()
    if tests.asserts:
        return _run_asserts(program, tests.asserts, stop_on_failure, sandbox)
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
