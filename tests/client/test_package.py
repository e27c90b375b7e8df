"""The client as it is published: `python -m build` makes an sdist and a wheel of it, twine's
check passes on both, and the wheel carries the version written in one place and the CHANGELOG
its sdist ships."""

import tarfile
import zipfile
from pathlib import Path

import pytest

import trackerapi
from tests.helpers.processes import run_python


@pytest.fixture(scope="module")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("dist")
    # No isolation: the build backend is a pinned development requirement, not a download.
    built = run_python("-m", "build", "--no-isolation", "--outdir", str(out), "trackerapi")
    assert built.returncode == 0, built.stdout + built.stderr
    return sorted(out.iterdir())


def test_build_makes_an_sdist_and_a_wheel_of_the_version(distributions: list[Path]) -> None:
    version = trackerapi.__version__
    assert [path.name for path in distributions] == [
        f"trackerapi-{version}-py3-none-any.whl",
        f"trackerapi-{version}.tar.gz",
    ]


def test_twine_check_passes_on_both(distributions: list[Path]) -> None:
    checked = run_python("-m", "twine", "check", "--strict", *map(str, distributions))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2


def test_the_wheel_holds_the_package_and_the_sdist_its_changelog(
    distributions: list[Path],
) -> None:
    wheel, sdist = distributions
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(name for name in names if name.endswith(".dist-info/METADATA"))
        assert f"Version: {trackerapi.__version__}" in archive.read(metadata).decode()
    assert {"trackerapi/__init__.py", "trackerapi/aio.py", "trackerapi/py.typed"} <= names
    with tarfile.open(sdist) as archive:
        assert f"trackerapi-{trackerapi.__version__}/CHANGELOG.md" in archive.getnames()
