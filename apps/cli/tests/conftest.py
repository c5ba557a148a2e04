"""The `meridian` command run as a user runs it: a subprocess with a bare environment."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Meridian = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def meridian(tmp_path: Path) -> Meridian:
    """meridian(*args, env=None) -> the finished process (cwd and HOME: the test's tmp_path)."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        return subprocess.run([sys.executable, "-m", "meridian_cli.main", *args],
                              capture_output=True, text=True, cwd=tmp_path,
                              env={**base, **(env or {})}, timeout=600, check=False)
    return run
