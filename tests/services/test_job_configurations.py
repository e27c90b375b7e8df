"""The job configuration service: content hashing, and concurrent writers of one tag."""

import itertools
import threading
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import JobConfiguration
from app.schemas.job_configuration import JobConfigurationCreate, UpsertResult
from app.services import job_configurations
from config import config


def configuration_in(
    tag: str = "pipeline", *, name: str = "Pipeline", costs: tuple[str, ...] = ("1.5", "0")
) -> JobConfigurationCreate:
    return JobConfigurationCreate.model_validate(
        {
            "tag": tag,
            "name": name,
            "steps": [
                {"tag": f"s{index}", "name": f"Step {index}", "points": 1, "cost": cost}
                for index, cost in enumerate(costs)
            ],
        }
    )


def test_the_content_hash_ignores_how_costs_are_written_and_the_tag() -> None:
    digest = job_configurations.content_hash(configuration_in(costs=("1.5", "0")))
    assert job_configurations.content_hash(configuration_in(costs=("1.5000", "0.00"))) == digest
    assert job_configurations.content_hash(configuration_in("other", costs=("1.5", "0"))) == digest
    assert job_configurations.content_hash(configuration_in(costs=("1.5001", "0"))) != digest
    assert job_configurations.content_hash(configuration_in(costs=("0", "1.5"))) != digest
    assert job_configurations.content_hash(configuration_in(name="Other")) != digest


def test_totals_are_stored_with_the_version(db: Session) -> None:
    configuration, created = job_configurations.create_configuration(
        db, config_in=configuration_in(costs=("0.1", "0.2", "3"))
    )
    assert created
    assert configuration.step_count == 3
    assert configuration.total_points == 3
    assert configuration.total_cost == Decimal("3.3")
    assert [step.position for step in configuration.steps] == [0, 1, 2]


def count_versions(tag: str) -> int:
    with config.database.SessionLocal() as session:
        statement = select(func.count()).where(JobConfiguration.tag == tag)
        return session.execute(statement).scalar_one()


@pytest.mark.usefixtures("committed")
def test_a_concurrent_create_of_the_same_new_version_waits_and_finds_it() -> None:
    """The second writer blocks on the tag's lock, then sees the first one's version."""
    config_in = configuration_in("concurrent")
    outcomes: list[list[job_configurations.Upserted]] = []

    def second_writer() -> None:
        with config.database.SessionLocal() as session:
            outcomes.append(
                job_configurations.upsert_configurations(session, configs_in=[config_in])
            )
            session.commit()

    with config.database.SessionLocal() as first:
        [created] = job_configurations.upsert_configurations(first, configs_in=[config_in])
        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join(timeout=1)
        assert thread.is_alive(), "the second writer should wait for the first to commit"
        first.commit()
    thread.join(timeout=10)

    assert created.result is UpsertResult.CREATED
    [[second]] = outcomes
    assert second.result is UpsertResult.UNCHANGED
    assert second.version == 1
    assert count_versions("concurrent") == 1


@pytest.mark.usefixtures("committed")
def test_concurrent_bulk_uploads_with_shared_tags_in_any_order_all_succeed() -> None:
    tags = [f"bulk-{index}" for index in range(20)]
    barrier = threading.Barrier(4)
    failures: list[BaseException] = []

    def writer(order: list[str], cost: str) -> None:
        try:
            with config.database.SessionLocal() as session:
                barrier.wait(timeout=10)
                job_configurations.upsert_configurations(
                    session, configs_in=[configuration_in(tag, costs=(cost,)) for tag in order]
                )
                session.commit()
        except BaseException as error:  # reported below, from the test's thread
            failures.append(error)

    threads = [
        threading.Thread(target=writer, args=(order, cost))
        for order, cost in [
            (tags, "1"),
            (tags[::-1], "1"),
            (tags[::2] + tags[1::2], "2"),
            (tags[1::2] + tags[::2], "2"),
        ]
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert failures == []
    with config.database.SessionLocal() as session:
        for tag in tags:
            statement = (
                select(JobConfiguration.version, JobConfiguration.content_hash)
                .where(JobConfiguration.tag == tag)
                .order_by(JobConfiguration.version)
            )
            versions = session.execute(statement).all()
            # One version per change of content, numbered without gaps.
            assert [version for version, _ in versions] == list(range(1, len(versions) + 1))
            hashes = [digest for _, digest in versions]
            assert all(older != newer for older, newer in itertools.pairwise(hashes))
