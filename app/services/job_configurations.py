"""Job configurations: immutable versions of a named list of steps, one tag per configuration.

Writing the same content again changes nothing; changed content becomes the next version.
Writers of one tag are serialised with a transaction-level advisory lock, so concurrent uploads
of the same content make one version, and never fail on the (tag, version) unique constraint.
"""

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, aliased, selectinload

from app.internal.errors import NotFound
from app.internal.pagination import keyset_page
from app.models import JobConfiguration, JobConfigurationStep
from app.schemas.job_configuration import JobConfigurationCreate, UpsertResult

# Advisory locks here take two int4 keys: this namespace (b"JCFG"), then a hash of the tag.
# The two-key space is apart from single bigint keys, and no other namespace uses this one.
LOCK_NAMESPACE = 0x4A434647
MONEY_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class Upserted:
    configuration: JobConfiguration
    result: UpsertResult

    @property
    def tag(self) -> str:
        return self.configuration.tag

    @property
    def version(self) -> int:
        return self.configuration.version


def _money(value: Decimal) -> Decimal:
    return value.quantize(MONEY_PLACES)


def content_hash(config_in: JobConfigurationCreate) -> str:
    """SHA-256 of the canonical content: equal costs hash alike however they were written."""
    canonical: dict[str, object] = {
        "name": config_in.name,
        "steps": [
            [step.tag, step.name, step.points, str(_money(step.cost))] for step in config_in.steps
        ],
    }
    # Only the timeouts that are set: content without any hashes as it did before they existed.
    canonical.update(
        (name, value) for name, value in _timeouts(config_in).items() if value is not None
    )
    text = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _timeouts(config_in: JobConfigurationCreate) -> dict[str, int | None]:
    return {
        "start_timeout": config_in.start_timeout,
        "step_timeout": config_in.step_timeout,
        "job_timeout": config_in.job_timeout,
    }


def _lock_key(tag: str) -> int:
    return int.from_bytes(hashlib.sha256(tag.encode()).digest()[:4], "big", signed=True)


def _lock_tags(session: Session, tags: Iterable[str]) -> None:
    """Hold each tag's lock until the transaction ends. Keys are taken in ascending order, so
    two uploads sharing tags (or hash collisions) wait for each other instead of deadlocking."""
    for key in sorted({_lock_key(tag) for tag in tags}):
        session.execute(select(func.pg_advisory_xact_lock(LOCK_NAMESPACE, key)))


def _latest_versions() -> Select[JobConfiguration]:
    """The latest version of every tag (an anti-join that walks the (tag, version) index)."""
    newer = aliased(JobConfiguration)
    return select(JobConfiguration).where(
        ~select(newer.id)
        .where(newer.tag == JobConfiguration.tag, newer.version > JobConfiguration.version)
        .exists()
    )


def _new_version(
    config_in: JobConfigurationCreate, *, version: int, digest: str
) -> JobConfiguration:
    costs = [_money(step.cost) for step in config_in.steps]
    return JobConfiguration(
        tag=config_in.tag,
        version=version,
        name=config_in.name,
        content_hash=digest,
        step_count=len(config_in.steps),
        total_points=sum(step.points for step in config_in.steps),
        total_cost=sum(costs, Decimal(0)),
        **_timeouts(config_in),
        steps=[
            JobConfigurationStep(
                position=position, tag=step.tag, name=step.name, points=step.points, cost=cost
            )
            for position, (step, cost) in enumerate(zip(config_in.steps, costs, strict=True))
        ],
    )


def upsert_configurations(
    session: Session, *, configs_in: Sequence[JobConfigurationCreate]
) -> list[Upserted]:
    """Store each configuration whose content differs from its tag's latest version, as the
    next version; answer what happened to each, in order. Tags must not repeat."""
    tags = [config_in.tag for config_in in configs_in]
    _lock_tags(session, tags)
    latest = {
        configuration.tag: configuration
        for configuration in session.scalars(
            _latest_versions().where(JobConfiguration.tag.in_(tags))
        )
    }
    outcomes: list[Upserted] = []
    for config_in in configs_in:
        digest = content_hash(config_in)
        current = latest.get(config_in.tag)
        if current is None:
            outcome = Upserted(
                _new_version(config_in, version=1, digest=digest), UpsertResult.CREATED
            )
        elif current.content_hash == digest:
            outcome = Upserted(current, UpsertResult.UNCHANGED)
        else:
            configuration = _new_version(config_in, version=current.version + 1, digest=digest)
            outcome = Upserted(configuration, UpsertResult.NEW_VERSION)
        if outcome.result is not UpsertResult.UNCHANGED:
            session.add(outcome.configuration)
        outcomes.append(outcome)
    session.flush()
    return outcomes


def create_configuration(
    session: Session, *, config_in: JobConfigurationCreate
) -> tuple[JobConfiguration, bool]:
    """The configuration's current version with its steps, and whether this call created it."""
    [outcome] = upsert_configurations(session, configs_in=[config_in])
    if outcome.result is UpsertResult.UNCHANGED:
        return get_configuration(session, tag=outcome.tag, version=outcome.version), False
    return outcome.configuration, True


def get_configuration(
    session: Session, *, tag: str, version: int | None = None
) -> JobConfiguration:
    """A version of a configuration (the latest by default), with its steps."""
    statement = (
        select(JobConfiguration)
        .where(JobConfiguration.tag == tag)
        .options(selectinload(JobConfiguration.steps))
    )
    if version is None:
        statement = statement.order_by(JobConfiguration.version.desc()).limit(1)
    else:
        statement = statement.where(JobConfiguration.version == version)
    configuration = session.scalars(statement).first()
    if configuration is not None:
        return configuration
    if version is None or not _tag_exists(session, tag):
        raise NotFound(f"Job configuration {tag!r} not found")
    raise NotFound(f"Job configuration {tag!r} has no version {version}")


def _tag_exists(session: Session, tag: str) -> bool:
    return (
        session.scalar(
            select(select(JobConfiguration.id).where(JobConfiguration.tag == tag).exists())
        )
        or False
    )


def list_latest(
    session: Session, *, limit: int, cursor: str | None
) -> tuple[list[JobConfiguration], str | None]:
    """The latest version of each configuration, by tag, with their steps."""
    statement = _latest_versions().options(selectinload(JobConfiguration.steps))
    return keyset_page(
        session, statement, order_by=[JobConfiguration.tag], limit=limit, cursor=cursor
    )


def list_versions(
    session: Session, *, tag: str, limit: int, cursor: str | None
) -> tuple[list[JobConfiguration], str | None]:
    """Every version of one configuration, newest first, with their steps."""
    statement = (
        select(JobConfiguration)
        .where(JobConfiguration.tag == tag)
        .options(selectinload(JobConfiguration.steps))
    )
    configurations, next_cursor = keyset_page(
        session,
        statement,
        order_by=[JobConfiguration.version],
        descending=True,
        limit=limit,
        cursor=cursor,
    )
    if not configurations and cursor is None:
        raise NotFound(f"Job configuration {tag!r} not found")
    return configurations, next_cursor
