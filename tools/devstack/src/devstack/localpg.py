"""A project-local PostgreSQL cluster for development and tests.

Uses the PostgreSQL server binaries on this machine (PATH, then the usual Debian location), else the
ones shipped by the `pgserver` wheel. PostgreSQL refuses to run as root, so when we are root the server
runs as the unprivileged `nobody` user, allowed to traverse (not write) the folders above its data
directory, which may be private to root (a CI checkout in a mode-700 temp folder, say).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "postgres"


class LocalPostgresError(RuntimeError):
    pass


def find_bindir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True):
        return Path(candidate).parent
    try:
        import pgserver  # type: ignore[import-not-found]
    except ImportError:
        raise LocalPostgresError(
            "no PostgreSQL server binaries found: install PostgreSQL, or `pip install pgserver`"
        ) from None
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _as_server_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    return [
        "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
        "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
    ]


def _in_use(port: int) -> bool:
    """Whether something listens on the port. As PostgreSQL does, the probe ignores connections still
    closing (TIME_WAIT) from a server just stopped."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _buffers_mb() -> int:
    """A quarter of the machine's memory for shared buffers, as PostgreSQL's tuning guides advise, between
    128 MB and 4 GB."""
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return max(128, min(4096, memory_mb // 4))


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int
    durable: bool = True

    @property
    def bindir(self) -> Path:
        return find_bindir()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [*_as_server_user(), str(self.bindir / tool), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise LocalPostgresError(f"{tool} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def _init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.data_dir, "nobody", "nogroup")
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )

    def _accepts(self, setting: str) -> bool:
        """Whether this server build takes the setting (lz4 and zstd are build options)."""
        name = setting.split("=", 1)[0]
        return self._run("postgres", "-D", str(self.data_dir), "-C", name, "-c", setting, check=False).returncode == 0

    def is_running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def start(self) -> None:
        """Start the cluster (creating it first if needed); a running one is left as it is."""
        if not (self.data_dir / "PG_VERSION").exists():
            self._init()
        if self.is_running():
            return
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            "-c unix_socket_directories=''",
            "-c max_connections=200",
        ]
        if not self.durable:
            # Throwaway test clusters: durability buys nothing there, speed does.
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        else:
            # As a production server is sized rather than PostgreSQL's defaults (128 MB of buffers, a
            # checkpoint every 1 GB of WAL): with millions of rows stored, the keys' indexes stay in memory and
            # fewer checkpoints mean fewer full-page images in the WAL, compressed where the server can.
            options += [f"-c shared_buffers={_buffers_mb()}MB", "-c max_wal_size=4GB"]
            if self._accepts("wal_compression=lz4"):
                options.append("-c wal_compression=lz4")
        if _in_use(self.port):
            raise LocalPostgresError(f"port {self.port} is already taken on 127.0.0.1 (by another checkout's "
                                     "PostgreSQL, or another program)")
        log = self.data_dir / "server.log"
        logged_before = log.stat().st_size if log.exists() else 0
        started = self._run(
            "pg_ctl", "start", "-D", str(self.data_dir), "-w", "-t", "60", "-l", str(log), "-o", " ".join(options),
            check=False,
        )
        if started.returncode != 0:
            # pg_ctl only says to examine the log: say what the server wrote there this time.
            with open(log, "rb") as f:
                f.seek(logged_before)
                written = f.read().decode(errors="replace").splitlines()
            said = [line.split(":  ", 1)[-1] for level in ("FATAL:", "HINT:") for line in written if level in line]
            raise LocalPostgresError(
                f"PostgreSQL did not start on port {self.port}: {' '.join(said) or started.stderr.strip()} "
                f"(log: {log})"
            )

    def stop(self) -> None:
        if (self.data_dir / "PG_VERSION").exists() and self.is_running():
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w")


def with_database(url: str, name: str) -> str:
    """The same server's URL, for database `name`."""
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def recreate_database(admin_url: str, name: str) -> str:
    """Drop database `name` (ending its sessions) and create it empty; returns its URL."""
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_url, name)


async def ensure_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
