"""The spool file holds the scripts' metadata: it is readable by its user only."""

import stat
import sys
from pathlib import Path

import pytest

from trackerapi.spool import Spool

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_spool_is_private_to_its_user(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "trackerapi" / "spool.sqlite3"
    Spool(path).close()
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700


def test_an_existing_spool_readable_by_all_is_made_private(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    path = tmp_path / "spool.sqlite3"
    path.touch()
    path.chmod(0o644)
    Spool(path).close()
    assert mode(path) == 0o600
    assert mode(tmp_path) == 0o755  # a directory it did not make is left as it is
