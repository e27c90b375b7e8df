"""The README's two pipelines, run as written against the API: what it shows is what happens."""

import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from config import config
from root import ROOT_DIR
from tests.client.support import Account, ApiServer
from tests.helpers.factories import create_configuration

README = ROOT_DIR / "trackerapi" / "README.md"


def example(heading: str) -> str:
    """The first Python block under the README's `heading`."""
    section = README.read_text().split(f"## {heading}", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, heading
    return found.group(1)


def steps_of(code: str) -> list[str]:
    found = re.search(r"STEPS = \[(.*?)\]", code, re.S)
    assert found is not None
    return re.findall(r'"([a-z-]+)"', found.group(1))


@pytest.mark.parametrize(
    ("heading", "jobs"),
    [
        ("A complete example: the 20-step image-analysis pipeline", 2),
        ("The same pipeline in asyncio, several jobs at once", 8),
    ],
)
def test_the_readmes_pipeline_completes_its_jobs(
    api_server: ApiServer, account: Account, tmp_path: Path, heading: str, jobs: int
) -> None:
    code = example(heading)
    steps = steps_of(code)
    assert len(steps) == 20
    with config.database.SessionLocal() as session:
        create_configuration(
            session, tag="image-analysis", steps=[(step, 1, Decimal("0.1")) for step in steps]
        )
        session.commit()
    env = {
        "PATH": "/usr/bin:/bin",
        "TRACKER_URL": api_server.base_url,
        "TRACKER_API_KEY": account.api_key,
        "TRACKER_SPOOL": str(tmp_path / "spool.sqlite3"),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = sorted(result.stdout.splitlines())
    assert lines == [f"scan-{n:04d} completed 1.0 2.0000" for n in range(1, jobs + 1)]
    assert "refused" not in result.stdout
