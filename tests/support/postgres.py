"""A throwaway PostgreSQL server on loopback for the Postgres-storage tests.

The server binaries come from the system (`make test` installs Debian's `postgresql`);
the cluster lives in a temporary folder, listens on 127.0.0.1 on a free port with its unix
socket in that folder, runs with fsync off, requires a password over TCP, and is stopped
and deleted afterwards even when a test fails. As root, `initdb` and `pg_ctl` run as the
`postgres` user (initdb refuses root) on a folder that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.support.net import free_port

__all__ = ["PG_ENV", "PostgresServer", "create_database", "pg_env", "postgres_server",
           "running_postgres"]

#: the variables deploy/postgres/dagster.yaml reads
PG_ENV = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD",
          "DAGSTER_PG_DB")
USER = "dagster"
DB = "dagster"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    db_name: str
    data_dir: Path

    def env(self) -> dict[str, str]:
        """The connection as deploy/postgres/dagster.yaml expects it in the environment."""
        return dict(zip(PG_ENV, (self.host, str(self.port), self.user, self.password,
                                 self.db_name), strict=True))

    def connect(self, db_name: str | None = None):  # -> psycopg2 connection
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password, dbname=db_name or self.db_name)


def find_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin folder, or a clear failure."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError(
        "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb and no "
        "initdb on PATH): run `make system-deps` (Debian package `postgresql`) or "
        "`make test`, which installs it")


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a fresh cluster for the block; stop it and remove its files afterwards."""
    bin_dir = find_bin_dir()
    as_root = os.geteuid() == 0
    runas: list[str] = ["runuser", "-u", "postgres", "--"] if as_root else []
    root = Path(tempfile.mkdtemp(prefix="chartly-pg-"))
    data, sock_dir = root / "data", root / "sock"
    password = os.urandom(12).hex()
    started = False
    try:
        sock_dir.mkdir()
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        if as_root:
            account = pwd.getpwnam("postgres")
            for path in (root, sock_dir, pwfile):
                os.chown(path, account.pw_uid, account.pw_gid)
        subprocess.run([*runas, str(bin_dir / "initdb"), "-D", str(data), "-U", USER,
                        f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
                        "--auth-local=scram-sha-256", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, text=True)
        port = 0
        for _attempt in range(3):  # the port is free when chosen; retry if taken meanwhile
            port = free_port()
            options = (f"-c listen_addresses=127.0.0.1 -c port={port} "
                       f"-c unix_socket_directories={sock_dir} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off")
            proc = subprocess.run([*runas, str(bin_dir / "pg_ctl"), "-D", str(data), "-w",
                                   "-t", "30", "-o", options, "-l", str(root / "server.log"),
                                   "start"], capture_output=True, text=True)
            if proc.returncode == 0:
                started = True
                break
        if not started:
            log = (root / "server.log").read_text(encoding="utf-8", errors="replace")
            raise RuntimeError(f"PostgreSQL did not start:\n{proc.stderr}\n{log[-2000:]}")
        yield create_database(PostgresServer("127.0.0.1", port, USER, password, "postgres",
                                             data), DB)
    finally:
        if started:
            subprocess.run([*runas, str(bin_dir / "pg_ctl"), "-D", str(data), "-m",
                            "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway cluster per test module (up in about a second)."""
    with running_postgres() as server:
        yield server


def create_database(server: PostgresServer, name: str) -> PostgresServer:
    """A new, empty database on `server` (the same server, user and password)."""
    conn = server.connect("postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return replace(server, db_name=name)


@pytest.fixture
def pg_env(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch,
           request: pytest.FixtureRequest) -> PostgresServer:
    """A fresh database per test, its connection in the DAGSTER_PG_* variables that
    deploy/postgres/dagster.yaml reads."""
    server = create_database(postgres_server, f"t_{abs(hash(request.node.nodeid)):x}")
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return server
