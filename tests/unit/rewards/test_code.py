"""The code reward and its sandbox: scoring by hand-written programs and tests, extraction, and
what the sandbox contains (time, memory, processes, files, environment)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sandboxhelpers import sandbox_python

from r1pipe.rewards.accuracy import accuracy_reward, answer_matches
from r1pipe.rewards.code import (
    TestSuite,
    code_accuracy,
    code_reward,
    extract_program,
    parse_reference,
    parse_tests,
)
from r1pipe.rewards.combine import compute_rewards
from r1pipe.rewards.sandbox import SandboxConfig, SandboxError, run_python

# Generous for programs that finish in milliseconds (the machine may be loaded); the tests of
# hanging programs use a short one.
SLOW_OK_S = 20.0
HANG_S = 1.0
# How long after its timeout a hanging run may take to come back: killing, reaping, cleanup.
MARGIN_S = 1.5

SQUARE_TESTS = ["assert square(3) == 9", "assert square(-4) == 16", "assert square(0) == 0"]


@pytest.fixture(scope="module")
def sandbox() -> SandboxConfig:
    return SandboxConfig(python=sandbox_python(), timeout_s=SLOW_OK_S)


@pytest.fixture(scope="module")
def hang_sandbox(sandbox) -> SandboxConfig:
    return SandboxConfig(python=sandbox.python, timeout_s=HANG_S)


def answer(program: str, reasoning: str = "compute it") -> str:
    """An R1-format completion whose answer is ``program`` in a python block."""
    return f"<think>{reasoning}</think>\nHere it is.\n<answer>\n```python\n{program}\n```</answer>"


# --- scoring ----------------------------------------------------------------------------------


def test_correct_wrong_partial(sandbox):
    correct = answer("def square(x):\n    return x * x")
    wrong = answer("def square(x):\n    return x + x")  # right only for 0
    assert code_reward(correct, SQUARE_TESTS, sandbox=sandbox) == 1.0
    assert code_reward(wrong, SQUARE_TESTS, sandbox=sandbox) == pytest.approx(1 / 3)
    assert code_reward(wrong, SQUARE_TESTS, scoring="all", sandbox=sandbox) == 0.0
    assert code_reward(correct, SQUARE_TESTS, scoring="all", sandbox=sandbox) == 1.0
    wrong_everywhere = answer("def square(x):\n    return 7")
    assert code_reward(wrong_everywhere, SQUARE_TESTS, sandbox=sandbox) == 0.0


def test_assert_source_split_into_tests_with_setup(sandbox):
    # Setup statements (an import, a helper) join the next assert; 2 of 3 asserts pass.
    tests = (
        "import math\n"
        "def close(a, b):\n    return math.isclose(a, b)\n"
        "assert close(half(1), 0.5)\n"
        "assert half(4) == 2\n"
        "assert half(3) == 1\n"
    )
    assert len(parse_tests(tests)) == 3
    assert code_reward(answer("def half(x):\n    return x / 2"), tests, sandbox=sandbox) == (
        pytest.approx(2 / 3)
    )


def test_syntax_error_and_crash_score_zero(sandbox):
    assert code_reward(answer("def square(x) return x*x"), SQUARE_TESTS, sandbox=sandbox) == 0.0
    crash = answer("raise RuntimeError('boom')\ndef square(x):\n    return x * x")
    assert code_reward(crash, SQUARE_TESTS, sandbox=sandbox) == 0.0


def test_no_code_block_scores_zero_without_running(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("nothing should run")

    monkeypatch.setattr("r1pipe.rewards.code.run_python", forbidden)
    for completion in [
        "<think>x*x</think> <answer>def square(x): return x * x</answer>",  # no fence
        "<think>x*x</think> <answer>```python\ndef square(x):\n    return x * x",  # unclosed
        "<think>x*x</think> <answer>```\ndef square(x):\n    return x * x\n```</answer>",  # no tag
        "<think>x*x</think> ```python\ndef square(x):\n    return x * x\n```",  # no <answer>
        answer("   "),  # empty block
    ]:
        assert code_reward(completion, SQUARE_TESTS) == 0.0


def test_extraction_takes_the_answer_block_not_the_reasoning():
    completion = (
        "<think>First try:\n```python\ndef square(x):\n    return x + x\n```\nno.</think>\n"
        "<answer>\n```python\ndef square(x):\n    return x * x\n```\n</answer>"
    )
    assert extract_program(completion, "answer_tag") == "def square(x):\n    return x * x\n"
    # The last block of the answer wins; "auto" without a tag and "boxed" use the summary.
    two = answer("a = 1\n```\nthen\n```py\nb = 2")
    assert extract_program(two) == "b = 2\n"
    summary_only = "<think>```python\nx = 1\n```</think> Final:\n```Python\nx = 2\n```"
    assert extract_program(summary_only, "auto") == "x = 2\n"
    assert extract_program(summary_only, "boxed") == "x = 2\n"
    assert extract_program(summary_only, "answer_tag") is None


def test_extraction_scored_end_to_end(sandbox):
    reasoning_right = (
        "<think>```python\ndef square(x):\n    return x * x\n```</think>\n"
        "<answer>```python\ndef square(x):\n    return 0\n```</answer>"
    )
    assert code_reward(reasoning_right, SQUARE_TESTS, scoring="all", sandbox=sandbox) == 0.0


def test_early_exit_and_fake_reports_get_no_credit(sandbox):
    # Classic hacks: leave before the asserts run, or print what a harness might look for.
    for program in [
        "import sys\nsys.exit(0)",
        "import os\nos._exit(0)",
        "def square(x):\n    import os\n    os._exit(0)",
        "import sys\nfor i in range(3):\n    print('ok', i)\n    print('ok', i, file=sys.stderr)",
        # Straight into the harness's report descriptor, without its per-run token.
        "import os\n"
        "for fd in range(3, 10):\n"
        "    for i in range(3):\n"
        "        try:\n"
        "            os.write(fd, f'ok {i}\\n'.encode())\n"
        "        except OSError:\n"
        "            pass",
    ]:
        assert code_reward(answer(program), SQUARE_TESTS, sandbox=sandbox) == 0.0, program


def test_program_output_does_not_disturb_the_reports(sandbox):
    # Output without a final newline, flushed between reports, must not corrupt them.
    program = "def square(x):\n    print('partial line', end='', flush=True)\n    return x * x"
    assert code_reward(answer(program), SQUARE_TESTS, sandbox=sandbox) == 1.0


def test_stdin_stdout_tests(sandbox):
    tests = [
        {"input": "2 3\n", "output": "5\n"},
        {"input": "-10 4\n", "output": "-6"},  # a missing final newline is fine
        {"input": "7 8\n", "output": "15\n\n"},  # and so are trailing blank lines
    ]
    add = answer("a, b = map(int, input().split())\nprint(a + b)")
    assert code_reward(add, tests, sandbox=sandbox) == 1.0
    positive_only = answer("a, b = map(int, input().split())\nprint(abs(a) + b)")
    assert code_reward(positive_only, tests, sandbox=sandbox) == pytest.approx(2 / 3)
    assert code_reward(positive_only, tests, scoring="all", sandbox=sandbox) == 0.0
    # Reading fd 0 directly works too, and a run that exits non-zero fails even if it printed
    # the right output.
    assert (
        code_reward(
            answer("import sys\nprint(sum(map(int, open(0).read().split())))"),
            tests,
            sandbox=sandbox,
        )
        == 1.0
    )
    failing_exit = answer("import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit(1)")
    assert code_reward(failing_exit, tests, sandbox=sandbox) == 0.0
    apps_style = {"inputs": ["2 3\n"], "outputs": ["5\n"]}
    assert code_reward(add, apps_style, sandbox=sandbox) == 1.0


# --- containment ------------------------------------------------------------------------------


def test_infinite_loop_times_out_and_scores_zero(hang_sandbox):
    t0 = time.monotonic()
    assert code_reward(answer("while True:\n    pass"), SQUARE_TESTS, sandbox=hang_sandbox) == 0.0
    assert time.monotonic() - t0 < HANG_S + MARGIN_S
    result = run_python("while True: pass", config=hang_sandbox)
    assert result.status == "timeout" and result.wall_s < HANG_S + MARGIN_S


def test_hang_in_a_later_test_keeps_earlier_credit(hang_sandbox):
    program = "def square(x):\n    while x < 0:\n        pass\n    return x * x"
    t0 = time.monotonic()
    assert code_reward(answer(program), SQUARE_TESTS, sandbox=hang_sandbox) == pytest.approx(
        1 / 3  # square(3) passes, square(-4) hangs, square(0) never runs
    )
    assert time.monotonic() - t0 < HANG_S + MARGIN_S


def test_memory_hog_fails_in_the_child_only(sandbox):
    hog = "buffer = bytearray(2 * 1024 ** 3)\nprint(len(buffer))"
    result = run_python(hog, config=sandbox)
    assert result.status == "failed" and "MemoryError" in result.stderr
    program = "def square(x):\n    block = bytearray(2 * 1024 ** 3)\n    return x * x"
    assert code_reward(answer(program), SQUARE_TESTS, sandbox=sandbox) == 0.0


def test_fork_bomb_is_blocked(sandbox):
    # A bounded loop, so that a sandbox that failed to block forks does no harm.
    spawner = (
        "import os\n"
        "def spawned():\n"
        "    n = 0\n"
        "    for _ in range(50):\n"
        "        try:\n"
        "            pid = os.fork()\n"
        "        except OSError:\n"
        "            break\n"
        "        if pid == 0:\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "    return n\n"
    )
    t0 = time.monotonic()
    result = run_python(spawner + "print(spawned())", config=sandbox)
    assert result.status == "passed" and result.stdout == "0\n"
    assert code_reward(answer(spawner), ["assert spawned() == 50"], sandbox=sandbox) == 0.0
    assert time.monotonic() - t0 < 5.0
    # Threads are processes to the limit too (documented: thread-based solutions fail).
    threads = "import threading\nthreading.Thread(target=print).start()"
    assert run_python(threads, config=sandbox).status == "failed"


@pytest.mark.parametrize("isolation", ["auto", "none"])
def test_files_written_stay_in_a_temporary_directory_that_is_removed(
    sandbox, tmp_path, monkeypatch, isolation
):
    monkeypatch.chdir(tmp_path)
    program = (
        "import os\n"
        "with open('out.txt', 'w') as f:\n"
        "    f.write('x')\n"
        "print(os.path.abspath('out.txt'))\n"
    )
    before = set(Path(tempfile.gettempdir()).glob("r1pipe-sandbox-*"))
    python = sandbox_python(isolation)
    config = SandboxConfig(python=python, timeout_s=SLOW_OK_S, isolation=isolation)
    result = run_python(program, config=config)
    assert result.status == "passed"
    written = Path(result.stdout.strip())
    if isolation == "auto" and shutil.which("bwrap"):
        assert written == Path("/sandbox/work/out.txt")  # the host's path is not visible
    else:
        assert written.name == "out.txt" and written.parent.name == "work"
        assert written.parent.parent.parent == Path(tempfile.gettempdir())
        assert written.parent.parent.name.startswith("r1pipe-sandbox-")
        assert not written.exists() and not written.parent.exists()
    assert set(Path(tempfile.gettempdir()).glob("r1pipe-sandbox-*")) <= before
    assert list(tmp_path.iterdir()) == []


def test_file_size_limit(sandbox):
    small = SandboxConfig(python=sandbox.python, timeout_s=SLOW_OK_S, file_size_mb=1)
    big_file = "with open('big', 'wb') as f:\n    f.write(b'x' * (2 * 1024 * 1024))"
    assert run_python(big_file, config=small).status == "failed"
    # Captured output counts too, and only its end is kept.
    loud = "import sys\nsys.stdout.write('y' * 3000 + 'END')"
    capped = SandboxConfig(python=sandbox.python, timeout_s=SLOW_OK_S, max_output_bytes=100)
    result = run_python(loud, config=capped)
    assert result.stdout_truncated and len(result.stdout) == 100 and result.stdout.endswith("END")


def test_environment_is_not_inherited(sandbox, monkeypatch):
    monkeypatch.setenv("SECRET_API_KEY", "hunter2-do-not-leak")
    result = run_python("import os\nprint(dict(os.environ))", config=sandbox)
    assert result.status == "passed"
    assert "hunter2" not in result.stdout and "SECRET_API_KEY" not in result.stdout
    program = "import os\nleaked = os.environ.get('SECRET_API_KEY')"
    assert code_reward(answer(program), ["assert leaked is None"], sandbox=sandbox) == 1.0


def test_stdin_is_empty_when_not_given(sandbox):
    result = run_python("import sys\nprint(repr(sys.stdin.read()))", config=sandbox)
    assert result.stdout == "''\n"
    # In assert tests the program cannot read the harness's input (its tests) either, not
    # even by rewinding file descriptor 0.
    program = "import os\nos.lseek(0, 0, os.SEEK_SET)\nseen = os.read(0, 1000)"
    assert code_reward(answer(program), ["assert seen == b''"], sandbox=sandbox) == 1.0


def test_sandbox_that_cannot_start_raises_for_the_reward():
    broken = SandboxConfig(python="/nonexistent/python3")
    assert run_python("print(1)", config=broken).status == "error"
    with pytest.raises(SandboxError, match="nonexistent"):
        code_reward(answer("x = 1"), ["assert x == 1"], sandbox=broken)
    missing_tool = SandboxConfig(command_prefix=("no-such-jail-tool", "--"))
    assert "no-such-jail-tool" in run_python("print(1)", config=missing_tool).error


def test_setup_failure_in_the_child_is_an_error_not_a_failed_program():
    """The child sets its limits and user itself; when that fails the program never ran."""
    if os.geteuid() != 0:
        config = SandboxConfig(run_as="0", isolation="none")  # only root may become root
    elif not os.access(sys.base_prefix, os.R_OK, effective_ids=False) or sys.base_prefix.startswith(
        "/root/"
    ):
        # Without namespaces our interpreter under /root is unreadable to the sandbox's uid.
        config = SandboxConfig(isolation="none")
    else:
        pytest.skip("no setup that fails here")
    result = run_python("print('ran')", config=config)
    assert result.status == "error" and "setup failed" in result.error
    assert "ran" not in result.stdout


def test_command_prefix_wraps_the_command(sandbox, tmp_path):
    # `env` is a harmless stand-in for nsjail/docker: it runs the rest of the command line.
    prefixed = SandboxConfig(
        python=sandbox_python("none"),
        timeout_s=SLOW_OK_S,
        command_prefix=("env", "WRAPPED_IN={dir}"),
    )
    # {dir} holds code/main.py and work/, the working directory.
    program = "import os\nprint(os.path.join(os.environ['WRAPPED_IN'], 'work') == os.getcwd())"
    result = run_python(program, config=prefixed)
    assert result.status == "passed" and result.stdout == "True\n"


# --- references, the accuracy verifier and compute_rewards ------------------------------------


def test_parse_tests_and_reference_forms_and_errors():
    assert parse_tests(["assert f(1) == 1"]) == TestSuite(asserts=("assert f(1) == 1",))
    assert parse_tests([{"input": "1", "output": "2"}]) == TestSuite(io=(("1", "2"),))
    # Source without a top-level assert (HumanEval-style check function) is one test.
    assert len(parse_tests("def check(f):\n    assert f(1) == 1\ncheck(g)")) == 1
    for bad in [
        [],
        "",
        "assert (",
        [{"input": "1"}],
        {"inputs": ["1"], "outputs": []},
        3,
        {"inputs": [], "outputs": [], "fn_name": "f"},
        ["assert f(", "x"],
    ]:
        with pytest.raises(ValueError):
            parse_tests(bad)
    suite, scoring, config = parse_reference(
        json.dumps({"tests": ["assert f(1) == 1"], "scoring": "all", "memory_mb": 64})
    )
    assert len(suite) == 1 and scoring == "all" and config.memory_mb == 64
    assert parse_reference(json.dumps("assert f(1) == 1"))[1] == "fraction"
    for bad in [
        "assert f(1) == 1",
        json.dumps({"tests": ["x"], "timeout": 1}),
        json.dumps({"tests": ["x"], "scoring": "most"}),
        json.dumps({"tests": ["x"], "memory_mb": "lots"}),
    ]:
        with pytest.raises(ValueError):
            parse_reference(bad)


def _reference(tests, sandbox: SandboxConfig, **extra) -> str:
    return json.dumps(
        {"tests": tests, "python": sandbox.python, "timeout_s": sandbox.timeout_s, **extra}
    )


def test_accuracy_verifier_and_answer_matches(sandbox):
    ref = _reference(SQUARE_TESTS, sandbox)
    right = answer("def square(x):\n    return x * x")
    half_right = answer("def square(x):\n    return x + x")
    assert accuracy_reward(right, ref, verifier="code") == 1.0
    assert code_accuracy(half_right, ref) == pytest.approx(1 / 3)
    assert (
        accuracy_reward(
            half_right, _reference(SQUARE_TESTS, sandbox, scoring="all"), verifier="code"
        )
        == 0.0
    )
    # Evaluation's correctness: every test passes, given the extracted answer.
    assert answer_matches("```python\ndef square(x):\n    return x * x\n```", ref, "code")
    assert not answer_matches("```python\ndef square(x):\n    return x + x\n```", ref, "code")
    assert not answer_matches("```python\nx = 1\n```", "not a test spec", "code")
    with pytest.raises(ValueError):
        accuracy_reward(right, "not a test spec", verifier="code")


def test_compute_rewards_code_task(sandbox, hang_sandbox):
    ref = _reference(SQUARE_TESTS, sandbox)
    hang_ref = _reference(SQUARE_TESTS, hang_sandbox)
    right = answer("def square(x):\n    return x * x")
    loop = answer("def square(x):\n    while True:\n        pass")
    t0 = time.monotonic()
    result = compute_rewards(
        [right, answer("def square(x):\n    return x + x"), loop, "no code here"],
        [ref, ref, hang_ref, ref],
        {"accuracy": 1.0, "format": 0.5},
        group_size=2,
        lengths=[10] * 4,
        task_verifier="code",
        answer_format="answer_tag",
        timeout_s=0.01,  # applies to math/extra rewards, not to the sandbox's own limit
    )
    assert result.per_reward["accuracy"] == pytest.approx([1.0, 1 / 3, 0.0, 0.0])
    assert result.total == pytest.approx([1.5, 1 / 3 + 0.5, 0.5, 0.0])
    assert result.failures == {"accuracy": 0, "format": 0}  # a timeout is a wrong answer
    assert time.monotonic() - t0 < HANG_S + MARGIN_S + 5.0
    # A sandbox that cannot start, or a broken reference, scores 0 and is counted; no raise.
    broken = json.dumps({"tests": SQUARE_TESTS, "python": "/nonexistent/python3"})
    result = compute_rewards(
        [right, right, right],
        [broken, "{not json", ref],
        {"accuracy": 1.0},
        group_size=1,
        lengths=[1, 1, 1],
        task_verifier="code",
        answer_format="answer_tag",
    )
    assert result.per_reward["accuracy"] == [0.0, 0.0, 1.0]
    assert result.failures == {"accuracy": 2}


def test_trivial_program_overhead(sandbox):
    """Not a benchmark: a trivial run must cost well under a second (it is ~20-50 ms)."""
    runs = [run_python("pass", config=sandbox).wall_s for _ in range(3)]
    assert min(runs) < 1.0, runs


def test_sandbox_config_validation():
    for bad in [
        dict(timeout_s=0),
        dict(timeout_s=float("nan")),
        dict(memory_mb=0),
        dict(run_as=""),
    ]:
        with pytest.raises(ValueError):
            SandboxConfig(**bad)
    assert SandboxConfig(command_prefix=["a"]).command_prefix == ("a",)


def test_runs_as_unprivileged_user_when_root(sandbox):
    result = run_python("import os\nprint(os.geteuid())", config=sandbox)
    expected_nonroot = os.geteuid() == 0  # auto switches only away from root
    uid = int(result.stdout)
    assert (uid != 0) if expected_nonroot else (uid == os.geteuid())


def test_docstring_examples():
    import doctest

    from r1pipe.rewards import code as code_mod

    result = doctest.testmod(code_mod)
    assert result.attempted >= 2 and result.failed == 0
