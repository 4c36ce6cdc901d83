"""Run untrusted Python source (a model's program) in a separate, isolated, resource-limited
process.

:func:`run_python` writes the source to ``code/main.py`` of a fresh temporary directory and
runs ``python -I`` on it, with ``work/`` beside it as the working directory, and:

* isolation (:mod:`r1pipe.rewards.isolation`): by default namespaces through bubblewrap (no
  network, no other process, no host file but the Python installation, private ``/tmp`` and
  ``/dev/shm``), a uid of its own per concurrent sample when the trainer is root, and cgroup
  limits on memory (tmpfs included) and processes. Where namespaces cannot be made, root
  falls back to the own uid with a warning, and any other user is refused unless
  ``isolation="none"``;
* the program in a directory it cannot write (owned by the trainer, read-only in the
  namespaces), and a separate working directory that is its ``HOME`` (and, without
  namespaces, its ``TMPDIR``), removed afterwards with everything written into it;
* isolated mode (``-I``: no user site-packages, ``PYTHON*`` variables ignored) and a
  whitelisted environment: none of the trainer's variables (tokens, keys, ``*_API_KEY``)
  reach the program;
* stdin from the given bytes, or empty (``/dev/null``);
* resource limits: CPU seconds (``RLIMIT_CPU``), address space (``RLIMIT_AS``), size of any
  file written, captured output included (``RLIMIT_FSIZE``), open files (``RLIMIT_NOFILE``), no
  core dumps, and no new processes or threads (``RLIMIT_NPROC`` = 0, per uid), which stops
  fork bombs;
* a wall-clock timeout after which the whole process group is killed (the program is started
  in a new session; in namespaces, the PID namespace dies with it), and then whatever is left
  in its cgroup;
* stdout and stderr captured to unnamed temporary files, of which the last
  ``max_output_bytes`` are kept.

The limits and the user switch are applied by a few lines of trusted code (``_BOOTSTRAP``) at
the start of the child interpreter, before it reads the program, not by ``preexec_fn`` or
``Popen(user=...)`` in the parent. Either of those makes ``subprocess`` use ``fork()`` instead
of ``vfork()``, which copies the page tables of the whole trainer: measured, 290 ms instead of
35 ms per spawn from a parent holding 3 GB, and a GPU trainer holds more. ``preexec_fn`` is
also documented as unsafe in a multi-threaded parent, which a trainer is. The interpreter
starts as the trainer's user and switches before running any of the program; a failure to set
up is reported as ``status="error"``, not blamed on the program.

``command_prefix`` runs every program under another tool (nsjail, ``docker run``, ...); with
``isolation="auto"`` that tool then stands in for the namespaces, with ``"namespaces"`` bwrap
runs inside it. The uid, the cgroup and the rlimits apply under any prefix.

Example::

    result = run_python("print(sum(range(10)))")
    assert (result.status, result.stdout) == ("passed", "45\\n")
    assert run_python("while True: pass", config=SandboxConfig(timeout_s=0.5)).status == "timeout"
"""

from __future__ import annotations

import functools
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

from r1pipe.rewards.isolation import (
    ISOLATIONS,
    SANDBOX_CODE,
    SANDBOX_WORK,
    IsolationUnavailable,
    Slot,
    _warned,  # noqa: F401  (re-exported: tests reset it)
    acquire_slot,
    admit,
    bwrap_command,
    cgroup_join_command,
    kill_cgroup,
    warn_once,
)

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
        run_as: ``"auto"`` (as root: a uid of its own per concurrent sample, from
            ``uid_base``; otherwise the current user), ``"current"`` (never switch; as root
            that keeps root, unsafe), or a user name or numeric uid shared by all samples
            (switching needs root).
        uid_base: First uid of the per-sample pool of ``run_as="auto"`` (uids not in
            ``/etc/passwd``, 1024 of them).
        isolation: ``"auto"`` (namespaces where bubblewrap can make them; else, as root, the
            own uid with a warning; else refused), ``"namespaces"`` (required), or ``"none"``
            (rlimits, and the uid as root, only: the program can read what its user can
            read and use the network). See :mod:`r1pipe.rewards.isolation`.
        python: Interpreter to run; None means the trainer's own (``sys.executable``). In
            namespaces its installation is made readable; without them, running as another
            user, it must be one that user can execute (not one under ``/root``).
        site_packages: Whether the program may import the interpreter's installed packages
            (its ``site``; e.g. numpy). Off: the standard library only (``python -S``, with
            ``exit``/``quit`` still defined), which also starts ~5 ms faster per program.
        command_prefix: Prepended to the command, e.g. ``("nsjail", "--config", "py.cfg",
            "--")``; ``{dir}`` in an item becomes the run's temporary directory (with
            ``code/main.py`` and ``work/``, to be bound at the same path). The uid, cgroup
            and rlimits still apply; see the module docstring for namespaces.
    """

    timeout_s: float = 5.0
    memory_mb: int = 512
    file_size_mb: int = 16
    max_open_files: int = 64
    max_output_bytes: int = _MIB
    run_as: str = RUN_AS_AUTO
    uid_base: int = 61000
    isolation: str = "auto"
    python: str | None = None
    site_packages: bool = False
    command_prefix: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):  # also rejects NaN
            raise ValueError(f"timeout_s must be a finite number > 0, got {self.timeout_s!r}")
        for name in ("memory_mb", "file_size_mb", "max_open_files", "max_output_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.run_as:
            raise ValueError("run_as must be 'auto', 'current', a user name or a uid")
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {self.isolation!r}")
        if not 1000 <= self.uid_base <= 2**31 - 2048:
            raise ValueError(f"uid_base must be a uid >= 1000, got {self.uid_base!r}")
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


def _minimal_env(home: str, tmpdir: str) -> dict[str, str]:
    # Nothing is inherited from the trainer. Numeric libraries are told to use one thread,
    # since the program may not create threads (RLIMIT_NPROC) and would otherwise warn.
    return {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "HOME": home,
        "TMPDIR": tmpdir,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _target_user(config: SandboxConfig) -> tuple[tuple[int, int] | None, int | None]:
    """``(fixed (uid, gid) or None for the trainer's user, uid_base of a per-sample pool or
    None)``."""
    run_as = config.run_as
    if run_as == RUN_AS_CURRENT:
        return None, None
    if run_as == RUN_AS_AUTO:
        return (None, config.uid_base) if os.geteuid() == 0 else (None, None)
    try:
        entry = pwd.getpwuid(int(run_as)) if run_as.isdigit() else pwd.getpwnam(run_as)
    except KeyError:
        raise SandboxError(f"run_as: no user {run_as!r}") from None
    if entry.pw_uid == os.geteuid():
        return None, None
    return (entry.pw_uid, entry.pw_gid), None


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


# Trusted code at the start of the child interpreter: set the limits, switch user (when it is
# root: under a command prefix the tool may have switched already), check that the standard
# library is still readable, then run the program as __main__ in this very module, so its
# namespace is the program's (only the function below is defined there, and it is removed).
# argv: program path, cgroup.procs files to join (comma-separated), uid, gid, then resource
# soft hard...
_SETUP_FAILED = 121
_BOOTSTRAP = f"""
def _enter():
    import os, resource, sys

    path, cgroups = sys.argv[1], sys.argv[2]
    uid, gid, *limits = [int(arg) for arg in sys.argv[3:]]
    try:
        for procs in filter(None, cgroups.split(",")):
            with open(procs, "w") as f:
                f.write("0")  # this process
        for i in range(0, len(limits), 3):
            resource.setrlimit(limits[i], (limits[i + 1], limits[i + 2]))
        if uid >= 0 and os.geteuid() == 0:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        library = os.path.dirname(os.__file__)
        if not os.access(library, os.R_OK | os.X_OK):
            raise PermissionError(f"uid {{os.getuid()}} cannot read {{library}}")
        if hasattr(resource, "RLIMIT_NPROC"):
            # Per user, threads included. 0: none can be created (this one exists already).
            resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
        with open(path, "rb") as f:
            code = compile(f.read(), "main.py", "exec")
    except Exception as e:
        os.write(2, f"r1pipe sandbox: setup failed: {{type(e).__name__}}: {{e}}\\n".encode())
        os._exit({_SETUP_FAILED})
    if "site" not in sys.modules:  # python -S: what site would have given a script
        import builtins
        builtins.exit = builtins.quit = sys.exit
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


def _kill_children(pid: int) -> None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        return
    for child in children:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _tail(f: IO[bytes], limit: int) -> tuple[str, bool]:
    size = f.seek(0, os.SEEK_END)
    start = max(0, size - limit)
    f.seek(start)
    return f.read().decode("utf-8", errors="replace"), start > 0


@functools.cache
def _namespaces_problem(python: str, euid: int) -> str | None:
    """Why programs cannot run in namespaces here (None: they can). Tried once per
    interpreter, by running one."""
    del euid  # part of the cache key: the answer differs for root
    probe = SandboxConfig(python=python, isolation="namespaces", timeout_s=30.0)
    try:
        result = _run("print('ok')", None, probe, namespaces=True)
    except (SandboxError, IsolationUnavailable) as e:
        return str(e)
    if result.status == "passed" and result.stdout == "ok\n":
        return None
    return result.error or f"status {result.status}: {result.stderr.strip()[-300:]}"


def _use_namespaces(config: SandboxConfig, python: str) -> bool:
    """Whether this run gets namespaces; raises IsolationUnavailable where it must and
    cannot (the message says what to install or set)."""
    if config.isolation == "none" or (config.isolation == "auto" and config.command_prefix):
        return False
    problem = _namespaces_problem(python, os.geteuid())
    if problem is None:
        return True
    if config.isolation == "namespaces":
        raise IsolationUnavailable(f"isolation=namespaces: cannot make namespaces: {problem}")
    if os.geteuid() == 0:
        warn_once(
            f"code sandbox without namespaces ({problem}): programs run as a uid of their own "
            "with rlimits and cgroups, but can read world-readable files and use the network; "
            "install bubblewrap (apt-get install bubblewrap) to isolate them"
        )
        return False
    raise IsolationUnavailable(
        f"the code sandbox cannot isolate model-written programs here: {problem}. Not root, "
        "so without namespaces they would run as your own user, able to read your files and "
        "keys and to signal or trace the trainer. Install bubblewrap (apt-get install "
        "bubblewrap) and allow unprivileged user namespaces (sysctl "
        "kernel.unprivileged_userns_clone=1), run as root in a container, or set "
        "task.code.isolation=none to accept running them unisolated"
    )


def _command(
    config: SandboxConfig,
    python: str,
    root: str,
    slot: Slot,
    namespaces: bool,
    sync_fds: tuple[int, int] | None,
) -> tuple[list[str], str]:
    """The command line of one run and its working directory (as the program sees it).

    Who moves the run into its cgroups: in namespaces the trainer, while bwrap waits
    (``sync_fds``); without them the interpreter, as root, before the program; under a prefix
    tool (which may switch user first) a shell, before the tool."""
    code_dir, work_dir = os.path.join(root, "code"), os.path.join(root, "work")
    uid, gid = (slot.uid, slot.gid) if slot.uid is not None else (-1, -1)
    joins: list[str] = []
    if namespaces:
        program, cwd = f"{SANDBOX_CODE}/main.py", SANDBOX_WORK
        inner = bwrap_command(python, code_dir, work_dir, config.memory_mb, sync_fds)
    else:
        program, cwd = os.path.join(code_dir, "main.py"), work_dir
        inner = []
        if not config.command_prefix:
            joins = [os.path.join(c, "cgroup.procs") for c in slot.cgroups]
    setup = [str(v) for v in (uid, gid, *_limits(config))]
    flags = ["-I"] if config.site_packages else ["-I", "-S"]
    command = [*inner, python, *flags, "-c", _BOOTSTRAP, program, ",".join(joins), *setup]
    if config.command_prefix:
        prefix = [item.replace("{dir}", root) for item in config.command_prefix]
        # Resolve the tool with the trainer's PATH: the child's environment has only os.defpath.
        resolved = shutil.which(prefix[0])
        if resolved is None:
            raise SandboxError(f"command_prefix: {prefix[0]!r} not found on PATH")
        command = [*cgroup_join_command(slot.cgroups), resolved, *prefix[1:], *command]
    return command, cwd


def _start(
    command: list[str],
    cwd: str,
    work_dir: str,
    namespaces: bool,
    stdin: bytes | str | None,
    out: IO[bytes],
    err: IO[bytes],
    pass_fds: tuple[int, ...] = (),
) -> subprocess.Popen:
    """Start the run; raise SandboxError if it cannot start. No ``preexec_fn`` and no
    ``user=``: see the module docstring."""
    env = _minimal_env(cwd, "/tmp" if namespaces else cwd)
    with tempfile.TemporaryFile() as inp:
        if stdin is not None:
            inp.write(stdin.encode() if isinstance(stdin, str) else stdin)
            inp.seek(0)
        try:
            return subprocess.Popen(
                command,
                cwd=work_dir,
                env=env,
                stdin=inp if stdin is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group, killed as a whole
                close_fds=True,
                pass_fds=pass_fds,
            )
        except OSError as e:
            raise SandboxError(f"cannot start {command[0]!r}: {e}") from None


def _make_dirs(root: str, source: str, slot: Slot) -> None:
    """``root/code/main.py``, owned by the trainer and read-only to the program, and
    ``root/work``, the program's own. Modes are set explicitly: the trainer's umask is 077."""
    code_dir, work_dir = os.path.join(root, "code"), os.path.join(root, "work")
    os.mkdir(code_dir)
    with open(os.path.join(code_dir, "main.py"), "w", encoding="utf-8") as f:
        f.write(source)
    os.mkdir(work_dir)
    if slot.uid is not None:
        os.chmod(root, 0o711)
        os.chmod(code_dir, 0o755)
        os.chmod(os.path.join(code_dir, "main.py"), 0o644)
        os.chown(work_dir, slot.uid, slot.gid)
    os.chmod(work_dir, 0o700)


def _run(
    source: str, stdin: bytes | str | None, config: SandboxConfig, *, namespaces: bool
) -> SandboxResult:
    start = time.monotonic()
    python = config.python or sys.executable
    fixed_user, uid_base = _target_user(config)
    with (
        acquire_slot(fixed_user, uid_base, config.memory_mb) as slot,
        tempfile.TemporaryDirectory(prefix="r1pipe-sandbox-", ignore_cleanup_errors=True) as root,
    ):
        _make_dirs(root, source, slot)
        handshake = namespaces and bool(slot.cgroups) and not config.command_prefix
        info_r, info_w = os.pipe() if handshake else (-1, -1)
        block_r, block_w = os.pipe() if handshake else (-1, -1)
        sync_fds = (info_w, block_r) if handshake else None
        command, cwd = _command(config, python, root, slot, namespaces, sync_fds)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = _start(
                    command,
                    cwd,
                    os.path.join(root, "work"),
                    namespaces,
                    stdin,
                    out,
                    err,
                    pass_fds=sync_fds or (),
                )
            finally:
                for fd in (info_w, block_r):
                    if fd >= 0:
                        os.close(fd)
            timed_out = True
            try:
                if handshake:
                    try:
                        timeout = max(config.timeout_s, 10.0)
                        admit(proc.pid, info_r, block_w, slot.cgroups, timeout)
                    finally:
                        os.close(info_r)
                        os.close(block_w)
                timed_out = _wait(proc, config.timeout_s)
            finally:
                if timed_out and namespaces:
                    # Kill the program, not bwrap first: bwrap then reaps it and exits. Killed
                    # first, bwrap would leave it orphaned, a zombie where nothing reaps.
                    _kill_children(proc.pid)
                    _wait(proc, 2.0)
                # Always, also after a normal exit: what the program left running dies too.
                _kill_group(proc.pid)
                proc.wait()
                kill_cgroup(slot.cgroups)
            wall_s = time.monotonic() - start
            stdout, stdout_truncated = _tail(out, config.max_output_bytes)
            stderr, stderr_truncated = _tail(err, config.max_output_bytes)
    returncode = proc.returncode
    if returncode == _SETUP_FAILED and "r1pipe sandbox: setup failed" in stderr:
        # The program never ran. (A program could fake this, and would only score 0.)
        error = stderr.strip().splitlines()[-1]
        return SandboxResult("error", returncode, stdout, stderr, wall_s, error=error)
    if namespaces and returncode == 1 and stderr.startswith("bwrap: "):
        return SandboxResult("error", returncode, stdout, stderr, wall_s, error=stderr.strip())
    if namespaces and returncode > 128:
        returncode = -(returncode - 128)  # bwrap reports a signal as 128 + its number
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


def run_python(
    source: str, *, stdin: bytes | str | None = None, config: SandboxConfig | None = None
) -> SandboxResult:
    """Run ``source`` as a Python script in the sandbox described in this module's docstring.

    Args:
        source: The program, run as ``main.py``.
        stdin: The program's standard input; None gives it an empty one.
        config: Limits, isolation and runner; None uses :class:`SandboxConfig` defaults.

    Returns:
        A :class:`SandboxResult`. This function does not raise for anything the program does;
        a sandbox that cannot start (interpreter not found or not executable by the user,
        unknown user, prefix tool missing, isolation that cannot be had) gives
        ``status="error"``.
    """
    config = config or SandboxConfig()
    start = time.monotonic()
    python = config.python or sys.executable
    try:
        if not (os.path.isfile(python) and os.access(python, os.X_OK)):
            raise SandboxError(f"cannot start {python!r}: not an executable file")
        namespaces = _use_namespaces(config, python)
        return _run(source, stdin, config, namespaces=namespaces)
    except (SandboxError, IsolationUnavailable) as e:
        return SandboxResult("error", None, "", "", time.monotonic() - start, error=str(e))
