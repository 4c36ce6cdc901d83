"""Isolation of sandboxed programs: namespaces, a uid per concurrent sample, cgroup limits.

:mod:`r1pipe.rewards.sandbox` runs each program; this module decides what it can reach.

* **Namespaces** (``isolation="namespaces"``, and ``"auto"`` where they work) with bubblewrap
  (``bwrap``, Debian/Ubuntu package ``bubblewrap``): no network (a network namespace with
  only a down loopback), a PID namespace (no other process is visible, ``/proc`` is its own),
  private IPC and UTS, a private ``/tmp`` and ``/dev/shm`` (tmpfs of at most ``memory_mb``),
  and of the host's files only the system directories (``/usr``, ``/lib*``, ``/bin``) and the
  interpreter's installation, read-only. The program is bound read-only at
  ``/sandbox/code/main.py`` and works in ``/sandbox/work``, the only writable directory.
  As root bwrap needs no user namespace; otherwise it makes one, which the kernel must allow
  (``kernel.unprivileged_userns_clone``, AppArmor's ``restrict_unprivileged_userns``).
* **A uid of its own per concurrent sample** when the trainer is root (``run_as="auto"``):
  uids ``uid_base``, ``uid_base + 1``, ... (default 61000, not in ``/etc/passwd``), each
  claimed by one thread at a time and, through a lock file in ``/run/r1pipe-sandbox``, by one
  process of the machine, so that the samples of one group, or of two trainers, cannot
  signal, trace or overwrite each other even without namespaces.
* **cgroup limits** when the trainer is root and the cgroup file system is writable (v1 with
  the memory and pids controllers, or v2 where the trainer's cgroup delegates them): memory
  (which, unlike ``RLIMIT_AS``, counts files written to tmpfs such as ``/dev/shm``) and the
  number of processes. Each uid has a cgroup below the trainer's own, which every run joins
  before anything of it starts (through ``sh``, which then ``exec``s), and whose processes are
  killed after the run.

Without namespaces a program can read what its user may read, write where that user may
write and use the network. ``isolation="auto"`` therefore falls back only as root, where the
program still runs as a uid of its own, with a warning; a trainer that is not root and cannot
make namespaces refuses to run model code (:class:`IsolationUnavailable`) unless the user sets
``isolation="none"``, accepting that the program runs as their own user with rlimits only.
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import json
import logging
import os
import pwd
import select
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ISOLATIONS",
    "IsolationUnavailable",
    "Slot",
    "acquire_slot",
    "admit",
    "bwrap_command",
    "join",
    "cgroup_join_command",
    "kill_cgroup",
]

log = logging.getLogger(__name__)

#: ``isolation`` values: best available, namespaces required, or rlimits (and uid) only.
ISOLATIONS = ("auto", "namespaces", "none")
#: Where the program and its working directory are inside the namespaces.
SANDBOX_CODE = "/sandbox/code"
SANDBOX_WORK = "/sandbox/work"
_UID_POOL_SIZE = 1024
_MAX_PIDS = 16  # the interpreter, bwrap and its init; RLIMIT_NPROC already forbids forks
_LOCK_DIRS = ("/run/r1pipe-sandbox", "/tmp/r1pipe-sandbox-locks")


class IsolationUnavailable(RuntimeError):
    """The isolation asked for cannot be had here; the message says why and what to set."""


# -- namespaces ------------------------------------------------------------------------------


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _python_roots(python: str) -> list[str]:
    """Directories to bind read-only so that ``python`` runs: its installation prefix (the
    parent of its ``bin``), unresolved (a virtual environment) and resolved (its base)."""
    roots = []
    for path in (os.path.abspath(python), os.path.realpath(python)):
        prefix = os.path.dirname(os.path.dirname(path))
        if prefix not in roots:
            roots.append(prefix)
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
            if prefix not in roots:
                roots.append(prefix)
    return roots


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    for name in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(name):
            args += ["--ro-bind", name, name]
    return args


@functools.cache
def _bwrap_fixed(python: str, euid: int) -> tuple[str, ...]:
    """The part of the bwrap command that is the same for every run of ``python``."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise IsolationUnavailable("bubblewrap (bwrap) is not installed")
    args = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    # --as-pid-1: no init of bwrap's own in the namespace, which can outlive the outer bwrap and,
    # orphaned, stay a zombie where nothing reaps them (containers whose pid 1 is not an init).
    args += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--as-pid-1"]
    if euid != 0:
        args += ["--unshare-user", "--disable-userns"]
    args += _system_binds()
    made: set[str] = set()
    for root in _python_roots(python):
        if root.startswith("/usr/") or root == "/usr" or not os.path.isdir(root):
            continue
        # bwrap makes missing parents of a mount point mode 0700, which another uid cannot
        # cross; made here first, they are 0755.
        for parent in reversed(Path(root).parents[:-1]):  # without "/"
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", root, root]
    return tuple(args)


def bwrap_command(
    python: str,
    code_dir: str,
    work_dir: str,
    memory_mb: int,
    sync_fds: tuple[int, int] | None = None,
) -> list[str]:
    """The bwrap command line (up to its ``--``) that runs ``python`` with ``code_dir`` at
    :data:`SANDBOX_CODE` (read-only) and ``work_dir`` at :data:`SANDBOX_WORK`.

    ``sync_fds``: ``(info, block)``: bwrap writes the program's pid as JSON to ``info`` and
    waits, namespaces made, until ``block`` is readable before it starts the program, so that
    the trainer can move it into its cgroups first (:func:`admit`)."""
    args = list(_bwrap_fixed(python, os.geteuid()))
    size = str(memory_mb << 20)
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp"]
    args += ["--perms", "1777", "--size", size, "--tmpfs", "/dev/shm"]
    args += ["--perms", "0755", "--dir", os.path.dirname(SANDBOX_CODE)]
    args += ["--ro-bind", code_dir, SANDBOX_CODE]
    args += ["--bind", work_dir, SANDBOX_WORK]
    if sync_fds is not None:
        args += ["--info-fd", str(sync_fds[0]), "--block-fd", str(sync_fds[1])]
    args += ["--chdir", SANDBOX_WORK, "--"]
    return args


# -- uids --------------------------------------------------------------------------------------


class _UidPool:
    """Uids claimed for this process (by a lock file each) and handed to one thread at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: dict[int, list[int]] = {}
        self._held: dict[int, int] = {}  # uid -> lock file descriptor, kept open

    def _lock_dir(self) -> str:
        for path in _LOCK_DIRS:
            try:
                os.makedirs(path, mode=0o700, exist_ok=True)
                info = os.lstat(path)
            except OSError:
                continue
            # Not a directory someone else made for us (a symlink, another owner).
            if info.st_uid == os.geteuid() and (info.st_mode & 0o077) == 0:
                return path
        raise IsolationUnavailable(f"no private directory for sandbox uid locks ({_LOCK_DIRS})")

    def acquire(self, base: int) -> int:
        with self._lock:
            free = self._free.setdefault(base, [])
            if free:
                return free.pop()
            directory = self._lock_dir()
            for uid in range(base, base + _UID_POOL_SIZE):
                if uid in self._held or _uid_exists(uid):
                    continue
                fd = os.open(os.path.join(directory, f"uid-{uid}"), os.O_CREAT | os.O_RDWR, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                self._held[uid] = fd
                return uid
        raise IsolationUnavailable(f"no free sandbox uid in {base}..{base + _UID_POOL_SIZE - 1}")

    def release(self, base: int, uid: int) -> None:
        with self._lock:
            self._free[base].append(uid)


def _uid_exists(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


_UIDS = _UidPool()


# -- cgroups -----------------------------------------------------------------------------------


@functools.cache
def _cgroup_parents() -> tuple[str, ...] | None:
    """The directories under which per-uid cgroups are made (v1: one per controller, memory
    and pids; v2: one), below this process's own cgroups; None where that cannot be done."""
    if os.geteuid() != 0:
        return None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    own: dict[str, str] = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    parents = []
    if "memory" in own and "pids" in own:
        candidates = [("memory", own["memory"]), ("pids", own["pids"])]
        mounts = {c: f"/sys/fs/cgroup/{c}" for c in ("memory", "pids")}
    elif "" in own and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        candidates = [("", own[""])]
        mounts = {"": "/sys/fs/cgroup"}
    else:
        return None
    for controller, path in candidates:
        mount = mounts[controller]
        base = os.path.join(mount, path.lstrip("/"))
        if not os.path.isdir(base):  # a cgroup namespace: our cgroup is the mount's root
            base = mount
        parent = os.path.join(base, "r1pipe-sandbox")
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError:
            return None
        parents.append(parent)
    return tuple(parents)


_LIMIT_FILES = {  # (memory file, pids file) by cgroup version
    "v1": ("memory.limit_in_bytes", "pids.max"),
    "v2": ("memory.max", "pids.max"),
}
_made_cgroups: list[str] = []
_made_lock = threading.Lock()


def _remove_cgroups() -> None:
    for path in reversed(_made_cgroups):
        try:
            os.rmdir(path)
        except OSError:
            pass
    # the parents only if they were looked up (and so perhaps made) in this process
    parents = _cgroup_parents() if _cgroup_parents.cache_info().currsize else None
    for parent in parents or ():
        try:
            os.rmdir(parent)
        except OSError:
            pass


atexit.register(_remove_cgroups)


_configured: dict[tuple[int, int], tuple[str, ...]] = {}
_cgroups_off = False


def _uid_cgroups(uid: int, memory_mb: int) -> tuple[str, ...]:
    """The cgroup directories of ``uid`` with its limits set; () where cgroups are not
    usable (then only the rlimits and the tmpfs sizes bound a program). Limits are written
    when they change, not per run."""
    global _cgroups_off
    key = (uid, memory_mb)
    if key in _configured:
        return _configured[key]
    parents = None if _cgroups_off else _cgroup_parents()
    if not parents:
        return ()
    version = "v2" if len(parents) == 1 else "v1"
    memory_file, pids_file = _LIMIT_FILES[version]
    dirs = []
    try:
        for parent in parents:
            path = os.path.join(parent, f"uid-{uid}")
            if not os.path.isdir(path):
                os.mkdir(path)
                with _made_lock:
                    _made_cgroups.append(path)
            dirs.append(path)
        for path in dirs:
            if os.path.exists(os.path.join(path, memory_file)):
                _write(os.path.join(path, memory_file), str(memory_mb << 20))
            if os.path.exists(os.path.join(path, pids_file)):
                _write(os.path.join(path, pids_file), str(_MAX_PIDS))
        if not any(os.path.exists(os.path.join(p, memory_file)) for p in dirs):
            raise OSError(f"no {memory_file} (controller not delegated)")
    except OSError as e:
        warn_once(
            f"cgroups not usable for the code sandbox ({e}); memory of tmpfs files is "
            "bounded only by the tmpfs size, processes only by RLIMIT_NPROC"
        )
        _cgroups_off = True
        return ()
    with _made_lock:
        for other in [k for k in _configured if k[0] == uid]:
            del _configured[other]  # one limit per uid at a time: the one just written
        _configured[key] = tuple(dirs)
    return tuple(dirs)


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def cgroup_join_command(cgroups: tuple[str, ...]) -> list[str]:
    """A prefix that moves the command into ``cgroups`` and then ``exec``s it, so that all it
    starts is counted from its first instruction. Used under a ``command_prefix``, whose tool
    may switch user before the interpreter could join them itself."""
    if not cgroups:
        return []
    procs = " ".join(os.path.join(c, "cgroup.procs") for c in cgroups)
    if any(ch.isspace() for c in cgroups for ch in c):
        raise IsolationUnavailable(f"cgroup path with white space: {cgroups}")
    script = 'for f in $0; do echo $$ > "$f" || exit 121; done; exec "$@"'
    return ["/bin/sh", "-c", script, procs]


def join(pid: int, cgroups: tuple[str, ...]) -> None:
    """Move process ``pid`` into ``cgroups``.

    Raises:
        IsolationUnavailable: It could not be moved.
    """
    for cgroup in cgroups:
        try:
            _write(os.path.join(cgroup, "cgroup.procs"), str(pid))
        except OSError as e:
            raise IsolationUnavailable(f"cannot move process {pid} into {cgroup}: {e}") from None


def _in_cgroups(pid: int, cgroups: tuple[str, ...]) -> bool:
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return False
    paths = {line.split(":", 2)[2] for line in lines}
    return all(any(cgroup.endswith(path) and path != "/" for path in paths) for cgroup in cgroups)


def admit(
    bwrap_pid: int, info_fd: int, block_fd: int, cgroups: tuple[str, ...], timeout_s: float
) -> None:
    """Put a bwrap run into ``cgroups`` before its program starts, then let it start.

    bwrap itself is moved at once, while it is young: moving a process costs ~0.05 ms then,
    and ~5 ms (memory controller, cgroup v1) once it has set up its namespaces. What it forks
    next, the program, is born inside. If it forked first, the program (its pid read from
    ``info_fd``) is moved too. Then a byte on ``block_fd`` lets bwrap start it.

    Raises:
        IsolationUnavailable: bwrap reported no pid (it failed: its stderr says why) or a
            process could not be moved; the program is then not started.
    """
    join(bwrap_pid, cgroups)
    data = b""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([info_fd], [], [], remaining)[0]:
            raise IsolationUnavailable("bwrap did not report its sandbox in time")
        chunk = os.read(info_fd, 4096)
        if not chunk:
            break
        data += chunk
    try:
        pid = int(json.loads(data)["child-pid"])
    except (ValueError, KeyError, TypeError):
        raise IsolationUnavailable("bwrap did not start the sandbox") from None
    if not _in_cgroups(pid, cgroups):
        join(pid, cgroups)
    os.write(block_fd, b"1")


def kill_cgroup(cgroups: tuple[str, ...]) -> None:
    """Kill every process still in ``cgroups`` (none should be: the run's group and
    namespaces are gone), until they are empty."""
    for _ in range(50):
        pids = []
        for path in cgroups:
            try:
                pids += [int(p) for p in Path(path, "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                pass
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# -- slots -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """Who one run is and where it is counted.

    Attributes:
        uid: The uid the program switches to; None keeps the trainer's user.
        gid: Its gid.
        cgroups: cgroup directories the run joins (empty: none).
    """

    uid: int | None
    gid: int | None
    cgroups: tuple[str, ...] = ()


@contextmanager
def acquire_slot(
    user: tuple[int, int] | None, uid_base: int | None, memory_mb: int
) -> Iterator[Slot]:
    """A slot for one run: a uid of its own from the pool when ``uid_base`` is given (root
    only), else ``user`` (a fixed user, or None for the trainer's), with its cgroups."""
    if uid_base is None:
        cgroups = _uid_cgroups(user[0], memory_mb) if user else ()
        yield Slot(*(user or (None, None)), cgroups=cgroups)
        return
    uid = _UIDS.acquire(uid_base)
    try:
        yield Slot(uid, uid, cgroups=_uid_cgroups(uid, memory_mb))
    finally:
        _UIDS.release(uid_base, uid)


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time only (per process)."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)
