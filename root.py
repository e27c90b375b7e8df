"""The project's root directory, so files are found wherever the process starts."""

from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parent


def root_path(path: str | Path) -> Path:
    """Return `path` relative to the project root as an absolute path."""
    return ROOT_DIR / path
