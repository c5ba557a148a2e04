"""Several services migrate one fresh database at once on start (risk and ledger in the same
deployment, each its own process): they take turns under an advisory lock, and every one of
them succeeds."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import psycopg
import pytest

pytestmark = pytest.mark.integration
MIGRATE = "import sys; from meridian_common import db; db.migrate(sys.argv[1])"


@pytest.mark.parametrize("attempt", range(2))
def test_concurrent_migrations_all_succeed(new_database: Callable[[str], str],
                                           attempt: int) -> None:
    url = new_database(f"migconc{attempt}")
    procs = [subprocess.Popen([sys.executable, "-c", MIGRATE, url], stderr=subprocess.PIPE)
             for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    with psycopg.connect(url) as conn:
        [(version,)] = conn.execute("select version_num from alembic_version").fetchall()
        assert version >= "0007"
