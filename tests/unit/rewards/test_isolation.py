"""How the sandbox chooses its isolation (r1pipe/rewards/isolation.py, sandbox.py): namespaces
where bubblewrap can make them, the refusal where a non-root trainer cannot, the fallback as
root, and a uid of its own per concurrent sample."""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from sandboxhelpers import sandbox_python

from r1pipe.config.schema import CodeConfig, TaskConfig
from r1pipe.data.code import check_sandbox, code_reference
from r1pipe.errors import UserError
from r1pipe.rewards import isolation, sandbox
from r1pipe.rewards.sandbox import SandboxConfig, run_python

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="per-sample uids need root")

WHO = "import os\nprint(os.getuid(), len([p for p in os.listdir('/proc') if p.isdigit()]))"


@pytest.fixture
def no_namespaces(monkeypatch):
    """As where the kernel forbids namespaces: every probe fails."""
    sandbox_python(), sandbox_python("none")  # found (and cached) before, not under the patch
    probe = sandbox._namespaces_problem
    probe.cache_clear()
    monkeypatch.setattr(
        sandbox, "_namespaces_problem", lambda python, euid: "bwrap: No permission (test)"
    )
    yield
    probe.cache_clear()


def test_not_root_without_namespaces_refuses_with_the_reason(no_namespaces, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = run_python("print('ran')", config=SandboxConfig(python=sandbox_python()))
    assert result.status == "error" and "ran" not in result.stdout
    assert "cannot isolate" in result.error and "No permission (test)" in result.error
    assert "task.code.isolation=none" in result.error and "bubblewrap" in result.error
    # The stage learns it once, when the task loads, as a UserError naming the setting.
    reference = code_reference(["assert f(1) == 1"], CodeConfig(python=sandbox_python()))
    with pytest.raises(UserError, match="task.code.isolation=none"):
        check_sandbox(reference)


def test_required_namespaces_that_cannot_be_made_are_an_error(no_namespaces):
    config = SandboxConfig(python=sandbox_python(), isolation="namespaces")
    result = run_python("print('ran')", config=config)
    assert result.status == "error" and "isolation=namespaces" in result.error


@needs_root
def test_root_without_namespaces_falls_back_to_an_own_uid_with_a_warning(no_namespaces, caplog):
    sandbox._warned.clear()
    config = SandboxConfig(python=sandbox_python("none"))
    with caplog.at_level(logging.WARNING):
        result = run_python(WHO, config=config)
    assert result.status == "passed", result.stderr
    uid, processes = map(int, result.stdout.split())
    assert uid >= config.uid_base and processes > 5  # no PID namespace: the host's processes
    assert "without namespaces" in caplog.text and "apt-get install bubblewrap" in caplog.text


@needs_bwrap
def test_namespaces_by_default_when_bubblewrap_works():
    sandbox._namespaces_problem.cache_clear()
    result = run_python(WHO, config=SandboxConfig(python=sandbox_python()))
    assert result.status == "passed", result.stderr
    uid, processes = map(int, result.stdout.split())
    assert processes == 1  # only itself: pid 1 of its own PID namespace
    assert uid != 0


@needs_root
def test_each_concurrent_sample_has_a_uid_of_its_own():
    config = SandboxConfig(python=sandbox_python(), timeout_s=20)
    program = "import os, time\ntime.sleep(0.5)\nprint(os.getuid())"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: run_python(program, config=config), range(4)))
    uids = [int(r.stdout) for r in results]
    assert len(set(uids)) == 4, uids
    assert all(config.uid_base <= u < config.uid_base + 1024 for u in uids)
    # Released, then reused: a later run takes one of them again.
    assert int(run_python("import os\nprint(os.getuid())", config=config).stdout) in uids


@needs_root
def test_uid_pool_skips_taken_uids_and_locks_across_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(isolation, "_LOCK_DIRS", (str(tmp_path / "locks"),))
    first, second = isolation._UidPool(), isolation._UidPool()  # as two trainers would
    base = 61500
    a = first.acquire(base)
    b = second.acquire(base)  # the lock file of `a` is held by the first pool
    assert a == base and b == base + 1
    first.release(base, a)
    assert first.acquire(base) == a
    assert (tmp_path / "locks").stat().st_mode & 0o077 == 0


def test_config_rejects_unknown_isolation():
    with pytest.raises(ValueError, match="isolation"):
        SandboxConfig(isolation="jail")
    with pytest.raises(ValueError, match="uid_base"):
        SandboxConfig(uid_base=0)
    with pytest.raises(Exception, match="task.code.isolation"):
        TaskConfig(code=CodeConfig(isolation="jail"))


@needs_root
def test_uid_cgroup_and_limits_apply_under_a_command_prefix():
    """A prefix tool stands in for the namespaces; who runs the program and its limits stay."""
    config = SandboxConfig(
        python=sandbox_python("none"), timeout_s=20, command_prefix=("env", "X=1"), memory_mb=300
    )
    program = (
        "import os, resource\n"
        "print(os.getuid(), resource.getrlimit(resource.RLIMIT_AS)[0] >> 20,"
        " resource.getrlimit(resource.RLIMIT_NPROC)[0])\n"
        "print(open('/proc/self/cgroup').read())"
    )
    result = run_python(program, config=config)
    assert result.status == "passed", result.stderr
    first, cgroups = result.stdout.split("\n", 1)
    uid, address_space_mb, processes = map(int, first.split())
    assert uid >= config.uid_base and address_space_mb == 300 and processes == 0
    if isolation._cgroup_parents():
        assert f"r1pipe-sandbox/uid-{uid}" in cgroups
