"""Throwaway redis-server and PostgreSQL on loopback in a directory of their own.

For the fleet's tests and benchmark and for trying a fleet on one machine: nothing has to run
beforehand and nothing outlives the context. PostgreSQL refuses to run as root, so as root its
data directory belongs to the `postgres` system user and its programs run as that user (runuser).
Redis can be stopped and started again on the same port and data directory (an outage).
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

PG_BIN = Path(os.environ.get("IADM_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = os.environ.get("IADM_REDIS_SERVER", shutil.which("redis-server") or "/usr/bin/redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, timeout: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on 127.0.0.1:{port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


class LocalRedis:
    """redis-server on 127.0.0.1:port with its data (appendonly, so a restart keeps the stream) in `workdir`."""

    def __init__(self, workdir, port: int | None = None, password: str = ""):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.password = password
        self.proc = None

    def start(self, timeout: float = 10) -> LocalRedis:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
                "--logfile", str(self.workdir / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, timeout, "redis-server", self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password or None)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class LocalPostgres:
    """A PostgreSQL 15 cluster in `workdir` on 127.0.0.1:port, trust authentication, database `iadm`."""

    def __init__(self, workdir, port: int | None = None):
        self.workdir = Path(workdir)
        self.datadir = self.workdir / "pgdata"
        self.port = port or free_port()
        self.user = "postgres"
        self._as_user = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/iadm"

    def _run(self, *args, check=True):
        return subprocess.run(self._as_user + [str(a) for a in args], check=check, capture_output=True, text=True)

    def start(self, timeout: float = 30) -> LocalPostgres:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            entry = pwd.getpwnam("postgres")
            for path in (self.workdir, *self.workdir.parents):
                if path == Path("/"):
                    break
                os.chmod(path, os.stat(path).st_mode | 0o011)   # postgres may traverse to its directory
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        out = self._run(PG_BIN / "initdb", "-D", self.datadir, "-U", self.user, "--auth=trust", "-E", "UTF8",
                        "--no-sync", check=False)
        if out.returncode:
            raise RuntimeError(f"initdb in {self.datadir} failed: {out.stderr.strip()}")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.workdir} " \
                  "-c fsync=off -c synchronous_commit=on -c full_page_writes=off"
        out = self._run(PG_BIN / "pg_ctl", "-D", self.datadir, "-l", self.workdir / "postgres.log", "-o", options,
                        "-w", "-t", str(int(timeout)), "start", check=False)
        if out.returncode:
            raise RuntimeError(f"pg_ctl start failed: {out.stderr.strip() or out.stdout.strip()}; "
                               f"log: {self.workdir / 'postgres.log'}")
        self._run(PG_BIN / "createdb", "-h", "127.0.0.1", "-p", self.port, "-U", self.user, "iadm")
        return self

    def stop(self) -> None:
        if self.datadir.exists():
            self._run(PG_BIN / "pg_ctl", "-D", self.datadir, "-m", "fast", "-w", "stop", check=False)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
