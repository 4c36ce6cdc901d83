"""Every ``>>>`` example in the r1pipe package runs, and is right.

The modules are found by reading the package's files, not from a list, so a module that gains
examples is tested without touching this file. Each module must run exactly as many examples
as it has ``>>>`` lines: an example doctest cannot see (in a comment, or in the docstring of
an object it does not collect) would otherwise pass silently by never running.
"""

from __future__ import annotations

import doctest
import importlib
import re
import types
from pathlib import Path

import pytest

import r1pipe

PACKAGE_DIR = Path(r1pipe.__file__).resolve().parent
EXAMPLE_LINE = re.compile(r"^\s*>>> ", re.MULTILINE)


def _modules_with_examples() -> dict[str, int]:
    """Module name -> number of ``>>>`` lines in its source, for every module that has any."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if path.name == "__main__.py":  # importing it runs the CLI
            continue
        count = len(EXAMPLE_LINE.findall(path.read_text(encoding="utf-8")))
        if count:
            parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = count
    return found


MODULES = _modules_with_examples()


def _run_examples(module: types.ModuleType) -> doctest.TestResults:
    # The same finder and runner as doctest.testmod, quiet, with the module's globals.
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(verbose=False)
    for test in finder.find(module, module.__name__):
        runner.run(test, out=lambda _text: None)
    return runner.summarize(verbose=False)


def test_discovery_finds_the_modules_with_examples():
    for name in ("r1pipe.rl.grpo", "r1pipe.evaluation", "r1pipe.rejection", "r1pipe.rewards"):
        assert name in MODULES, sorted(MODULES)
    assert all(n > 0 for n in MODULES.values())


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_examples_run_and_pass(name):
    module = importlib.import_module(name)
    result = _run_examples(module)
    # the number of examples in the source, every one of them run
    assert result.attempted == MODULES[name], (
        f"{name}: {MODULES[name]} '>>>' lines but doctest ran {result.attempted} examples"
    )
    if result.failed:
        # Rerun loudly so the report shows which example failed and what it printed.
        doctest.testmod(module, verbose=False, report=True)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"


def test_a_wrong_example_is_reported():
    # The runner above is not vacuous: a wrong expected output counts as a failure.
    module = types.ModuleType("r1pipe_doctest_probe")
    source = (
        "def add(a, b):\n"
        '    """>>> add(2, 2)\n'
        "    5\n"
        "    >>> add(1, 1)\n"
        "    2\n"
        '    """\n'
        "    return a + b\n"
    )
    exec(source, module.__dict__)  # defined in the module, so doctest collects it
    assert _run_examples(module) == (1, 2)  # (failed, attempted)
