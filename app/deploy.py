"""Migrations on deploy: the CloudFormation custom resource that runs `alembic upgrade head`.

CloudFormation sends Create when the stack is made and Update whenever the resource's properties
change (template.yaml passes the function version SAM publishes for each new image, so every
deploy of a new image is an Update); both migrate to the head this image knows, make the
app's session settings the database's defaults, and encrypt any webhook signing secret not yet
under the first key (the `reencrypt_webhook_secrets` task). Delete changes nothing: the data
outlives the stack's functions. The answer (SUCCESS or FAILED with a reason) is a PUT of JSON to
the presigned `ResponseURL`; without one CloudFormation would wait an hour for it.
"""

import json
import logging
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from config import config
from config.database import database_defaults_sql
from config.log import LOGGER_NAME
from root import root_path

logger = logging.getLogger(f"{LOGGER_NAME}.deploy")

# CloudFormation refuses a response body over 4 KiB; the reason is the part that varies.
MAX_REASON_CHARS = 1500
RESPONSE_ATTEMPTS = 3
# CloudFormation's presigned URLs are S3 ones, in AWS's commercial or China partitions: the
# answer (and the stack's identifiers in it) goes nowhere else.
RESPONSE_URL_SCHEMES = frozenset({"https"})
RESPONSE_URL_HOST_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn")


def handle_custom_resource(event: dict[str, Any], context: Any) -> dict[str, str]:
    """Do what the request asks and answer CloudFormation; return the answer's status."""
    request_type = event.get("RequestType")
    physical_id = str(event.get("PhysicalResourceId") or f"{event.get('LogicalResourceId')}")
    data: dict[str, str] = {}
    try:
        if request_type in {"Create", "Update"}:
            outcome = migrate()
            reason, data["Revision"] = outcome["result"], outcome["revision"]
        elif request_type == "Delete":
            reason = "Nothing to undo: the database and its schema stay as they are"
        else:
            raise ValueError(f"unknown RequestType {request_type!r}")
        status = "SUCCESS"
        logger.info("Custom resource %s: %s", request_type, reason)
    except Exception as error:
        logger.exception("Custom resource %s failed", request_type)
        status = "FAILED"
        log_stream = getattr(context, "log_stream_name", None)
        where = f" (log stream {log_stream})" if log_stream else ""
        reason = f"{type(error).__name__}: {error}"[:MAX_REASON_CHARS] + where
    send_response(event, status=status, reason=reason, physical_id=physical_id, data=data)
    return {"Status": status, "Reason": reason}


def migrate() -> dict[str, str]:
    """Migrate to this image's head and set the database's session defaults: what a deploy
    does, and what invoking the function with `{"action": "migrate"}` does by hand."""
    revision, result = upgrade_to_head()
    set_database_defaults()
    if revision == ScriptDirectory.from_config(alembic_config()).get_current_head():
        # Data only the application can migrate (it needs the settings' keys); a database
        # ahead of this image is left to the image that knows it.
        from app.scheduled import run_task

        encrypted = run_task("reencrypt_webhook_secrets")["webhook_secrets_reencrypted"]
        if encrypted:
            result += f"; {encrypted} webhook signing secrets encrypted"
    return {"revision": revision, "result": result}


def alembic_config() -> AlembicConfig:
    alembic_cfg = AlembicConfig(str(root_path("alembic.ini")))
    # The application's log set-up (JSON lines on Lambda) stays; alembic.ini's is for terminals.
    alembic_cfg.attributes["configure_logger"] = False
    return alembic_cfg


def upgrade_to_head() -> tuple[str, str]:
    """Migrate to this image's head; return the revision and what was done.

    A database already past what this image knows (the deploy of an older image, as a
    rollback is) is left as it is: migrations are written to keep the previous version
    working, and a downgrade would lose data.
    """
    alembic_cfg = alembic_config()
    script = ScriptDirectory.from_config(alembic_cfg)
    head = script.get_current_head() or "base"
    known = {revision.revision for revision in script.walk_revisions()}
    with config.database.engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
    unknown = [revision for revision in current if revision not in known]
    if unknown:
        return ", ".join(current), (
            f"The database is at {', '.join(unknown)}, newer than this image's head {head}: "
            "left as it is"
        )
    if list(current) == [head]:
        return head, f"Already at {head}: nothing to migrate"
    started = time.perf_counter()
    command.upgrade(alembic_cfg, "head")
    seconds = time.perf_counter() - started
    return (
        head,
        f"Migrated from {', '.join(current) or 'an empty database'} to {head} in {seconds:.1f} s",
    )


def set_database_defaults() -> None:
    """Make the app's session settings the database's defaults, for the functions that reach
    it through RDS Proxy and so cannot send them (`DB_CONNECTION_OPTIONS=false`)."""
    timeout_ms = config.settings.db_statement_timeout_ms or None
    database = config.database.url.database or ""
    with config.database.engine.begin() as connection:
        for statement in database_defaults_sql(database, timeout_ms):
            connection.execute(text(statement))


def send_response(
    event: dict[str, Any], *, status: str, reason: str, physical_id: str, data: dict[str, str]
) -> None:
    """PUT the result to the presigned URL CloudFormation gave, retrying a failed attempt."""
    url = str(event.get("ResponseURL", ""))
    problem = response_url_problem(url)
    if problem:
        logger.error("Custom resource: not answering to ResponseURL %r: %s", url[:200], problem)
        return
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason,
            "PhysicalResourceId": physical_id,
            "StackId": event.get("StackId"),
            "RequestId": event.get("RequestId"),
            "LogicalResourceId": event.get("LogicalResourceId"),
            "NoEcho": False,
            "Data": data,
        }
    ).encode()
    # The presigned URL was signed with no Content-Type: sending one would break the signature.
    request = urllib.request.Request(  # noqa: S310 (the URL is checked above)
        url, data=body, method="PUT", headers={"Content-Type": ""}
    )
    for attempt in range(1, RESPONSE_ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                logger.info("Custom resource: %s sent (HTTP %s)", status, response.status)
                return
        except OSError as error:
            logger.warning(
                "Custom resource: sending %s failed (try %d): %s", status, attempt, error
            )
            if attempt < RESPONSE_ATTEMPTS:
                time.sleep(attempt)
    logger.error("Custom resource: %s could not be sent; CloudFormation will time out", status)


def response_url_problem(url: str) -> str | None:
    """Why `url` is not a presigned URL CloudFormation would give, or None if it may be one."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as error:
        return f"not a URL ({error})"
    if parts.scheme not in RESPONSE_URL_SCHEMES:
        return f"the scheme must be {' or '.join(sorted(RESPONSE_URL_SCHEMES))}"
    if not (parts.hostname or "").lower().endswith(RESPONSE_URL_HOST_SUFFIXES):
        return f"the host must end in {' or '.join(RESPONSE_URL_HOST_SUFFIXES)}"
    return None
