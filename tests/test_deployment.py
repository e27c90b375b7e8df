"""The Dockerfile and docker-compose.yml agree with the code (no Docker engine needed)."""

import importlib
import shlex
from typing import Any

import yaml

from app.entrypoint import LambdaHandler
from config.settings import Settings
from root import ROOT_DIR, root_path


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = root_path("Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_the_image_is_the_lambda_python_base() -> None:
    assert ("FROM", "public.ecr.aws/lambda/python:3.12") in dockerfile_instructions()


def test_every_path_the_dockerfile_copies_exists() -> None:
    copies = [rest for keyword, rest in dockerfile_instructions() if keyword == "COPY"]
    assert copies
    for rest in copies:
        sources = shlex.split(rest)[:-1]
        for source in sources:
            assert (ROOT_DIR / source).exists(), f"Dockerfile copies missing {source}"


def test_the_image_installs_runtime_requirements_only() -> None:
    runs = " ".join(rest for keyword, rest in dockerfile_instructions() if keyword == "RUN")
    assert "requirements.txt" in runs
    assert "requirements-dev.txt" not in runs


def test_the_handler_the_image_names_imports() -> None:
    [cmd] = [rest for keyword, rest in dockerfile_instructions() if keyword == "CMD"]
    [target] = yaml.safe_load(cmd)
    module_name, _, attribute = target.rpartition(".")
    handler = getattr(importlib.import_module(module_name), attribute)
    assert isinstance(handler, LambdaHandler)


def test_the_copied_code_is_everything_the_app_imports() -> None:
    copied = {
        source.rstrip("/")
        for keyword, rest in dockerfile_instructions()
        if keyword == "COPY"
        for source in shlex.split(rest)[:-1]
    }
    assert {"app", "config", "root.py", "alembic", "alembic.ini"} <= copied


def compose() -> dict[str, Any]:
    document = yaml.safe_load(root_path("docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def test_compose_runs_postgres_16_with_a_health_check_and_a_volume() -> None:
    db = compose()["services"]["db"]
    assert db["image"].startswith("postgres:16")
    assert "healthcheck" in db
    [volume] = db["volumes"]
    assert volume.split(":")[0] in compose()["volumes"]


def test_compose_serves_the_api_with_settings_the_app_reads() -> None:
    api = compose()["services"]["api"]
    assert api["depends_on"]["db"]["condition"] == "service_healthy"
    assert "uvicorn app.main:app" in " ".join(api["command"])
    fields = {name.upper() for name in Settings.model_fields}
    for name in api["environment"]:
        assert name == "APP_ENV" or name in fields, f"compose sets {name}, which nothing reads"
    db_env = compose()["services"]["db"]["environment"]
    assert api["environment"]["POSTGRES_PASSWORD"] == db_env["POSTGRES_PASSWORD"]
    assert api["environment"]["POSTGRES_DB"] == db_env["POSTGRES_DB"]
