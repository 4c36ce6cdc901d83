"""Run untrusted Python source (a model's program) in a separate, resource-limited process.

:func:`run_python` writes the source to ``main.py`` in a fresh temporary directory and runs
``python -I main.py`` there, with:

* isolated mode (``-I``: no user site-packages, ``PYTHON*`` variables ignored, the script's
  folder not put on ``sys.path``) and a minimal environment: none of the trainer's variables
  (tokens, keys, ``*_API_KEY``) reach the program;
* the temporary directory as working directory (also ``HOME`` and ``TMPDIR``), removed
  afterwards with everything the program wrote into it;
* stdin from the given bytes, or empty (``/dev/null``);
* resource limits: CPU seconds (``RLIMIT_CPU``), address space (``RLIMIT_AS``), size of any
  file written, captured output included (``RLIMIT_FSIZE``), open files (``RLIMIT_NOFILE``), no
  core dumps, and no new processes or threads (``RLIMIT_NPROC`` = 0), which stops fork bombs;
* when the trainer runs as root (containers), an unprivileged user (``nobody``) for the
  program: root ignores ``RLIMIT_NPROC`` and may write anywhere, so running as root would
  undo most of the above;
* a wall-clock timeout after which the whole process group is killed (the program is started
  in a new session, so its group is its own);
* stdout and stderr captured to unnamed temporary files, of which the last
  ``max_output_bytes`` are kept.

The limits and the user switch are applied by a few lines of trusted code (``_BOOTSTRAP``) at
the start of the child interpreter, before it reads ``main.py``, not by ``preexec_fn`` or
``Popen(user=...)`` in the parent. Either of those makes ``subprocess`` use ``fork()`` instead
of ``vfork()``, which copies the page tables of the whole trainer: measured, 290 ms instead of
35 ms per spawn from a parent holding 3 GB, and a GPU trainer holds more. ``preexec_fn`` is
also documented as unsafe in a multi-threaded parent, which a trainer is. The interpreter
starts as the trainer's user and switches before running any of the program; a failure to set
up is reported as ``status="error"``, not blamed on the program.

What this does NOT isolate, and why real deployments should add a container or nsjail: there
are no filesystem, network, PID or IPC namespaces. The program can read every file its user can
read (as ``nobody``: world-readable files, e.g. a checkout with default permissions), write
where that user may write (absolute paths are not confined to the temporary directory), open
network connections, and see other processes in ``/proc``. Untrusted code from a model being
trained is usually buggy rather than hostile, which these limits handle; against hostile code
set ``command_prefix`` to run every program under nsjail, bubblewrap or ``docker run``
(``{dir}`` in the prefix is replaced by the temporary directory, e.g. for a bind mount). Under
a prefix the resource limits still apply (set inside, by the interpreter), but r1pipe does not
switch user (the tool decides who runs inside), and the tool should enforce its own time limit
too: killing ``docker run`` does not stop its container.

Example::

    result = run_python("print(sum(range(10)))")
    assert (result.status, result.stdout) == ("passed", "45\\n")
    assert run_python("while True: pass", config=SandboxConfig(timeout_s=0.5)).status == "timeout"
"""

from __future__ import annotations

import math
import os
import pwd
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import IO

__all__ = ["RUN_AS_AUTO", "SandboxConfig", "SandboxError", "SandboxResult", "run_python"]

#: ``run_as`` value: ``nobody`` when running as root, else the current user.
RUN_AS_AUTO = "auto"
#: ``run_as`` value: never switch user (as root, the program runs as root).
RUN_AS_CURRENT = "current"
# The conventional unprivileged "overflow" id, used when no "nobody" entry exists.
_NOBODY_ID = 65534
_MIB = 1 << 20


class SandboxError(RuntimeError):
    """The sandbox itself could not run a program (not a fault of the program)."""


@dataclass(frozen=True)
class SandboxConfig:
    """How :func:`run_python` runs a program.

    Attributes:
        timeout_s: Wall-clock limit of one run; the process group is killed after it. The CPU
            limit is this rounded up plus one second, a backstop for the wall clock.
        memory_mb: Address-space limit (``RLIMIT_AS``) in MiB; allocating more raises
            ``MemoryError`` in the program.
        file_size_mb: Largest file the program may write, in MiB, its captured stdout and
            stderr included (``RLIMIT_FSIZE``; going over kills it with ``SIGXFSZ``).
        max_open_files: ``RLIMIT_NOFILE``.
        max_output_bytes: How much of the end of stdout and of stderr the result keeps.
        run_as: ``"auto"`` (``nobody`` when the trainer is root, else the current user),
            ``"current"`` (never switch; as root that keeps root, unsafe), or a user name or
            numeric uid (switching needs root).
        python: Interpreter to run; None means the trainer's own (``sys.executable``). When
            running as another user it must be one that user can execute (not one under
            ``/root``), e.g. ``/usr/bin/python3``.
        command_prefix: Prepended to the command, e.g. ``("nsjail", "--config", "py.cfg",
            "--")``; ``{dir}`` in an item becomes the run's temporary directory. The limits
            above still apply (the interpreter sets them inside); ``run_as`` does not.
    """

    timeout_s: float = 5.0
    memory_mb: int = 512
    file_size_mb: int = 16
    max_open_files: int = 64
    max_output_bytes: int = _MIB
    run_as: str = RUN_AS_AUTO
    python: str | None = None
    command_prefix: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):  # also rejects NaN
            raise ValueError(f"timeout_s must be a finite number > 0, got {self.timeout_s!r}")
        for name in ("memory_mb", "file_size_mb", "max_open_files", "max_output_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.run_as:
            raise ValueError("run_as must be 'auto', 'current', a user name or a uid")
        # Accept any sequence from callers (a list from a config) but store a hashable tuple.
        object.__setattr__(self, "command_prefix", tuple(self.command_prefix))


@dataclass(frozen=True)
class SandboxResult:
    """The outcome of one :func:`run_python` call.

    Attributes:
        status: ``"passed"`` (exit status 0), ``"failed"`` (any other exit, a signal included:
            an exception, ``MemoryError``, output over the file size limit), ``"timeout"``
            (killed at the wall-clock limit, or by the CPU limit), or ``"error"`` (the sandbox
            could not start the program; see ``error``).
        returncode: The exit status (negative: killed by that signal); None for ``"error"``.
        stdout: The last ``max_output_bytes`` of stdout, decoded as UTF-8 (bad bytes replaced).
        stderr: The same for stderr.
        wall_s: Seconds from start to the end of the process.
        stdout_truncated: Whether stdout was longer than what ``stdout`` holds.
        stderr_truncated: The same for stderr.
        error: Why the sandbox could not run the program (``status == "error"``).
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    error: str = ""


def _minimal_env(workdir: str) -> dict[str, str]:
    # Nothing is inherited from the trainer. Numeric libraries are told to use one thread,
    # since the program may not create threads (RLIMIT_NPROC) and would otherwise warn.
    return {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _target_user(run_as: str) -> tuple[int, int] | None:
    """``(uid, gid)`` to run the program as, or None to keep the current user."""
    if run_as == RUN_AS_CURRENT:
        return None
    if run_as == RUN_AS_AUTO:
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam("nobody")
            return entry.pw_uid, entry.pw_gid
        except KeyError:
            return _NOBODY_ID, _NOBODY_ID
    try:
        entry = pwd.getpwuid(int(run_as)) if run_as.isdigit() else pwd.getpwnam(run_as)
    except KeyError:
        raise SandboxError(f"run_as: no user {run_as!r}") from None
    if entry.pw_uid == os.geteuid():
        return None
    return entry.pw_uid, entry.pw_gid


def _limits(config: SandboxConfig) -> list[int]:
    """The rlimits for the child as flat ``[resource, soft, hard, ...]``. A value above the
    current hard limit (which the child inherits) is lowered to it: raising a hard limit needs
    privileges. ``RLIMIT_NPROC`` is not here: it is set after the user switch."""
    cpu_s = math.ceil(config.timeout_s) + 1
    wanted = [
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),  # SIGXCPU at the soft limit, SIGKILL at hard
        (resource.RLIMIT_AS, config.memory_mb * _MIB, config.memory_mb * _MIB),
        (resource.RLIMIT_FSIZE, config.file_size_mb * _MIB, config.file_size_mb * _MIB),
        (resource.RLIMIT_NOFILE, config.max_open_files, config.max_open_files),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    flat = []
    for which, soft, hard in wanted:
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        flat += [which, soft, hard]
    return flat


# Trusted code at the start of the child interpreter: set the limits, switch user, check that
# the standard library is still readable (an interpreter under /root is not, as nobody), then
# run main.py as __main__ in this very module, so its namespace is the program's (only the
# function below is defined there, and it is removed). argv: uid gid then resource soft hard...
_SETUP_FAILED = 121
_BOOTSTRAP = f"""
def _enter():
    import os, resource, sys

    uid, gid, *limits = [int(arg) for arg in sys.argv[1:]]
    try:
        for i in range(0, len(limits), 3):
            resource.setrlimit(limits[i], (limits[i + 1], limits[i + 2]))
        if uid >= 0:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        library = os.path.dirname(os.__file__)
        if not os.access(library, os.R_OK | os.X_OK):
            raise PermissionError(f"uid {{os.getuid()}} cannot read {{library}}")
        if hasattr(resource, "RLIMIT_NPROC"):
            # Per user, threads included. 0: none can be created (this one exists already).
            resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    except Exception as e:
        os.write(2, f"r1pipe sandbox: setup failed: {{type(e).__name__}}: {{e}}\\n".encode())
        os._exit({_SETUP_FAILED})
    with open("main.py", "rb") as f:
        code = compile(f.read(), "main.py", "exec")
    namespace = sys.modules["__main__"].__dict__
    del namespace["_enter"]
    namespace["__file__"] = "main.py"
    sys.argv = ["main.py"]
    exec(code, namespace)


_enter()
"""


def _wait(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait for ``proc`` to exit without reaping it; return whether the timeout hit first.

    Leaving the exited process unreaped (a zombie) keeps its pid, and so its process group
    id, from being reused until the group has been killed.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: poll for the exit instead
        deadline = time.monotonic() + timeout_s
        delay = 0.0005
        while proc.poll() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            time.sleep(min(delay, remaining))
            delay = min(2 * delay, 0.01)
        return False
    try:
        poller = select.poll()  # not select.select: the fd may be above FD_SETSIZE
        poller.register(pidfd, select.POLLIN)
        return not poller.poll(math.ceil(timeout_s * 1000))
    finally:
        os.close(pidfd)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def _tail(f: IO[bytes], limit: int) -> tuple[str, bool]:
    size = f.seek(0, os.SEEK_END)
    start = max(0, size - limit)
    f.seek(start)
    return f.read().decode("utf-8", errors="replace"), start > 0


def _command(config: SandboxConfig, workdir: str, user: tuple[int, int] | None) -> list[str]:
    uid, gid = user if user is not None else (-1, -1)
    setup = [str(v) for v in (uid, gid, *_limits(config))]
    command = [config.python or sys.executable, "-I", "-c", _BOOTSTRAP, *setup]
    if not config.command_prefix:
        return command
    prefix = [item.replace("{dir}", workdir) for item in config.command_prefix]
    # Resolve the tool with the trainer's PATH: the child's environment has only os.defpath.
    resolved = shutil.which(prefix[0])
    if resolved is None:
        raise SandboxError(f"command_prefix: {prefix[0]!r} not found on PATH")
    return [resolved, *prefix[1:], *command]


def _start(
    config: SandboxConfig,
    user: tuple[int, int] | None,
    workdir: str,
    stdin: bytes | str | None,
    out: IO[bytes],
    err: IO[bytes],
) -> subprocess.Popen:
    """Start ``main.py`` in ``workdir`` as the sandbox describes; raise SandboxError if it
    cannot start. No ``preexec_fn`` and no ``user=``: see the module docstring."""
    command = _command(config, workdir, user)
    with tempfile.TemporaryFile() as inp:
        if stdin is not None:
            inp.write(stdin.encode() if isinstance(stdin, str) else stdin)
            inp.seek(0)
        try:
            return subprocess.Popen(
                command,
                cwd=workdir,
                env=_minimal_env(workdir),
                stdin=inp if stdin is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group, killed as a whole
                close_fds=True,
            )
        except OSError as e:
            raise SandboxError(f"cannot start {command[0]!r}: {e}") from None


def run_python(
    source: str, *, stdin: bytes | str | None = None, config: SandboxConfig | None = None
) -> SandboxResult:
    """Run ``source`` as a Python script in the sandbox described in this module's docstring.

    Args:
        source: The program, run as ``main.py`` in a fresh temporary directory.
        stdin: The program's standard input; None gives it an empty one.
        config: Limits and runner; None uses :class:`SandboxConfig` defaults.

    Returns:
        A :class:`SandboxResult`. This function does not raise for anything the program does;
        a sandbox that cannot start (interpreter not found or not executable by ``run_as``,
        unknown user, prefix tool missing) gives ``status="error"``.
    """
    config = config or SandboxConfig()
    start = time.monotonic()
    try:
        user = None if config.command_prefix else _target_user(config.run_as)
        with tempfile.TemporaryDirectory(
            prefix="r1pipe-sandbox-", ignore_cleanup_errors=True
        ) as workdir:
            with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
                f.write(source)
            if user is not None:
                os.chown(workdir, *user)
            with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
                proc = _start(config, user, workdir, stdin, out, err)
                try:
                    timed_out = _wait(proc, config.timeout_s)
                finally:
                    # Always, also after a normal exit: what the program left running dies too.
                    _kill_group(proc.pid)
                    proc.wait()
                wall_s = time.monotonic() - start
                stdout, stdout_truncated = _tail(out, config.max_output_bytes)
                stderr, stderr_truncated = _tail(err, config.max_output_bytes)
    except SandboxError as e:
        return SandboxResult("error", None, "", "", time.monotonic() - start, error=str(e))
    returncode = proc.returncode
    if returncode == _SETUP_FAILED and "r1pipe sandbox: setup failed" in stderr:
        # The program never ran. (A program could fake this, and would only score 0.)
        error = stderr.strip().splitlines()[-1]
        return SandboxResult("error", returncode, stdout, stderr, wall_s, error=error)
    if timed_out or returncode == -signal.SIGXCPU:
        status = "timeout"
    elif returncode == 0:
        status = "passed"
    else:
        status = "failed"
    return SandboxResult(
        status,
        returncode,
        stdout,
        stderr,
        wall_s,
        stdout_truncated=stdout_truncated,
        stderr_truncated=stderr_truncated,
    )
