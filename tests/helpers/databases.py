"""A PostgreSQL server of a test's own, for tests that stop and start it. (For a scratch
database on the test server, use the function `scratch_database` of the module
`config.database`: `scratch_database(config.database.url)`, where `config.database` is the
configured `Database`.)"""

import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from config.database import create_database


class ThrowawayServer:
    """A PostgreSQL server of a test's own (the `pgserver` wheel), for tests that stop and start
    it: the embedded test server is shared by every test and must stay up."""

    def __init__(self, data_dir: Path) -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset, as in config.embedded.
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server

            self._server = get_server(data_dir, cleanup_mode="delete")

    def url(self, database: str) -> URL:
        return make_url(self._server.get_uri(database)).set(drivername="postgresql+psycopg2")

    def create_database(self, name: str) -> URL:
        url = self.url(name)
        create_database(url)
        return url

    def require_password(self, role: str) -> None:
        """Make `role` authenticate by password (SCRAM) on the socket; others stay trusted."""
        hba = Path(self._server.pgdata) / "pg_hba.conf"
        hba.write_text(f"local all {role} scram-sha-256\n" + hba.read_text())
        from pgserver._commands import POSTGRES_BIN_PATH

        subprocess.run(
            [POSTGRES_BIN_PATH / "pg_ctl", "-D", self._server.pgdata, "reload"],
            user=self._server.system_user,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def stop(self) -> None:
        """A fast shutdown, as a restart or a failover does: open sessions are cut off."""
        from pgserver._commands import POSTGRES_BIN_PATH

        subprocess.run(
            [POSTGRES_BIN_PATH / "pg_ctl", "-D", self._server.pgdata, "-w", "-m", "fast", "stop"],
            # pg_ctl refuses to run as root; pgserver runs the server as its own user then.
            user=self._server.system_user,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        """Start it again the way pgserver first did (same data, socket and URL), if stopped."""
        with self._server._lock:
            self._server.ensure_postgres_running()

    def remove(self) -> None:
        """Stop it if it runs and delete its data."""
        self._server.cleanup()


@contextmanager
def throwaway_server() -> Iterator[ThrowawayServer]:
    """A throwaway server with its data (and socket) in a short temporary directory of its own,
    removed afterwards.

    Not under pytest's temporary directories: every pytest run of the same user resets their
    root to mode 0700, which locks out the server's own user (pgserver runs postgres as the
    user `pgserver` when root runs the tests) as soon as another suite starts."""
    base_dir = Path(tempfile.mkdtemp(prefix="trk"))
    server: ThrowawayServer | None = None
    try:
        server = ThrowawayServer(base_dir / "pg")
        yield server
    finally:
        if server is not None:
            server.remove()
        shutil.rmtree(base_dir, ignore_errors=True)
