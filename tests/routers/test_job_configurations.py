"""Job configurations: versioning by content, validation, bulk upload, reads and their cost."""

import re
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import JobConfiguration, Role, Scope
from tests.helpers.capture import captured_statements
from tests.helpers.factories import (
    Login,
    bearer_token,
    create_admin,
    create_api_key,
    create_configuration,
    create_user,
    log_in,
    unique,
)

URL = "/job-configurations"
StepSpec = tuple[str, int, Any]
STEPS: tuple[StepSpec, ...] = (("fetch", 1, "0.5"), ("segment", 2, "1.25"), ("report", 7, "0"))


def steps_json(steps: tuple[StepSpec, ...] = STEPS) -> list[dict[str, Any]]:
    return [
        {"tag": tag, "name": f"Step {tag}", "points": points, "cost": cost}
        for tag, points, cost in steps
    ]


def config_json(
    tag: str, *, name: str = "Image analysis", steps: tuple[StepSpec, ...] = STEPS
) -> dict[str, Any]:
    return {"tag": tag, "name": name, "steps": steps_json(steps)}


def file_entry(
    tag: str, *, name: str = "Image analysis", steps: tuple[StepSpec, ...] = STEPS
) -> dict[str, Any]:
    return {"name": name, "tag": tag, "step_configurations": steps_json(steps)}


def new_tag() -> str:
    return unique("pipeline")


def count_versions(db: Session, tag: str) -> int:
    statement = select(func.count()).where(JobConfiguration.tag == tag)
    return db.execute(statement).scalar_one()


@pytest.fixture
def admin(client: TestClient, db: Session) -> Login:
    """The client logged in as an admin."""
    return log_in(client, create_admin(db))


def post(client: TestClient, login: Login, body: Any) -> Any:
    return client.post(URL, json=body, headers=login.headers)


def put(client: TestClient, login: Login, body: Any) -> Any:
    return client.put(URL, json=body, headers=login.headers)


# Creating and versioning


def test_create_answers_version_1_with_its_steps_in_order(client: TestClient, admin: Login) -> None:
    tag = new_tag()
    response = post(client, admin, config_json(tag))
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {
        "id",
        "tag",
        "version",
        "name",
        "step_count",
        "total_points",
        "total_cost",
        "created_at",
        "steps",
        "start_timeout",
        "step_timeout",
        "job_timeout",
    }
    assert body["tag"] == tag
    assert body["version"] == 1
    assert body["name"] == "Image analysis"
    assert body["step_count"] == 3
    assert body["total_points"] == 10
    assert body["steps"] == [
        {"tag": "fetch", "name": "Step fetch", "points": 1, "cost": "0.5000", "position": 0},
        {"tag": "segment", "name": "Step segment", "points": 2, "cost": "1.2500", "position": 1},
        {"tag": "report", "name": "Step report", "points": 7, "cost": "0.0000", "position": 2},
    ]


def test_money_is_a_decimal_string_never_a_float(client: TestClient, admin: Login) -> None:
    steps = (("a", 1, 0.1), ("b", 1, 0.2), ("c", 1, "12345678901234.5678"))
    body = post(client, admin, config_json(new_tag(), steps=steps)).json()
    assert body["total_cost"] == "12345678901234.8678"  # 0.1 + 0.2 exactly, no float drift
    assert [step["cost"] for step in body["steps"]] == ["0.1000", "0.2000", "12345678901234.5678"]


def test_the_same_content_again_answers_the_current_version_with_200(
    client: TestClient, admin: Login, db: Session
) -> None:
    tag = new_tag()
    first = post(client, admin, config_json(tag)).json()
    again = post(client, admin, config_json(tag))
    assert again.status_code == 200
    assert again.json() == first
    assert count_versions(db, tag) == 1


def test_changed_content_makes_the_next_version(
    client: TestClient, admin: Login, db: Session
) -> None:
    tag = new_tag()
    first = post(client, admin, config_json(tag)).json()

    renamed = post(client, admin, config_json(tag, name="Image analysis v2"))
    assert renamed.status_code == 201
    assert renamed.json()["version"] == 2
    assert renamed.json()["id"] != first["id"]

    repointed = post(client, admin, config_json(tag, steps=(("fetch", 2, "0.5"),)))
    assert repointed.status_code == 201
    assert repointed.json()["version"] == 3
    assert repointed.json()["total_points"] == 2

    back = post(client, admin, config_json(tag))  # like version 1, but 3 is the latest
    assert back.status_code == 201
    assert back.json()["version"] == 4
    assert count_versions(db, tag) == 4


@pytest.mark.parametrize("cost", [1.5, "1.50", "1.5000", "1.5", "15E-1"])
def test_equal_costs_written_differently_are_the_same_content(
    client: TestClient, admin: Login, cost: Any
) -> None:
    tag = new_tag()
    assert post(client, admin, config_json(tag, steps=(("a", 1, "1.5"),))).status_code == 201
    again = post(client, admin, config_json(tag, steps=(("a", 1, cost),)))
    assert again.status_code == 200
    assert again.json()["version"] == 1


def test_reordering_the_steps_makes_a_new_version(client: TestClient, admin: Login) -> None:
    tag = new_tag()
    post(client, admin, config_json(tag))
    reordered = post(client, admin, config_json(tag, steps=tuple(reversed(STEPS))))
    assert reordered.status_code == 201
    assert reordered.json()["version"] == 2
    assert [step["tag"] for step in reordered.json()["steps"]] == ["report", "segment", "fetch"]


def test_500_steps_are_accepted(client: TestClient, admin: Login) -> None:
    steps = tuple((f"s{index}", 1_000_000, "99.9999") for index in range(500))
    response = post(client, admin, config_json(new_tag(), steps=steps))
    assert response.status_code == 201, response.text
    assert response.json()["step_count"] == 500
    assert response.json()["total_points"] == 500_000_000
    assert response.json()["total_cost"] == "49999.9500"


# Who may write


def test_a_client_may_not_write(client: TestClient, db: Session) -> None:
    login = log_in(client, create_user(db, role=Role.CLIENT))
    assert post(client, login, config_json(new_tag())).status_code == 403
    assert put(client, login, {"job_configs": [file_entry(new_tag())]}).status_code == 403


def test_anonymous_callers_may_not_write(client: TestClient) -> None:
    assert client.post(URL, json=config_json(new_tag())).status_code == 401
    assert client.put(URL, json={"job_configs": [file_entry(new_tag())]}).status_code == 401


def test_an_admins_api_key_without_the_configure_scope_may_not_write(
    client: TestClient, db: Session
) -> None:
    key = create_api_key(db, create_admin(db), scopes=(Scope.INGEST, Scope.READ))
    headers = {"X-API-Key": key}
    response = client.post(URL, json=config_json(new_tag()), headers=headers)
    assert response.status_code == 403
    assert response.json() == {"detail": "This API key lacks the 'configure' scope"}
    file = {"job_configs": [file_entry(new_tag())]}
    assert client.put(URL, json=file, headers=headers).status_code == 403


def test_an_admins_api_key_with_the_configure_scope_pushes_configurations(
    client: TestClient, db: Session
) -> None:
    key = create_api_key(db, create_admin(db), scopes=(Scope.CONFIGURE,))
    headers = {"X-API-Key": key}
    tag = new_tag()
    pushed = client.put(URL, json={"job_configs": [file_entry(tag)]}, headers=headers)
    assert pushed.status_code == 200, pushed.text
    assert [(item["tag"], item["result"]) for item in pushed.json()] == [(tag, "created")]
    assert client.post(URL, json=config_json(new_tag()), headers=headers).status_code == 201
    # The scope writes configurations only: reading needs `read`.
    assert client.get(f"{URL}/{tag}", headers=headers).status_code == 403


def test_a_configure_key_of_a_user_who_is_not_an_admin_may_not_write(
    client: TestClient, db: Session
) -> None:
    # The API never creates one; the row is made directly, as a demoted owner's would stand.
    key = create_api_key(db, create_user(db, role=Role.CLIENT), scopes=(Scope.CONFIGURE,))
    file = {"job_configs": [file_entry(new_tag())]}
    response = client.put(URL, json=file, headers={"X-API-Key": key})
    assert response.status_code == 403
    assert response.json() == {"detail": "Only admins may do this"}


def test_an_admin_may_write_with_a_bearer_token_and_no_csrf_token(
    client: TestClient, db: Session
) -> None:
    headers = bearer_token(client, create_admin(db))
    client.cookies.clear()
    assert client.post(URL, json=config_json(new_tag()), headers=headers).status_code == 201


def test_a_cookie_write_needs_the_csrf_token(client: TestClient, admin: Login) -> None:
    assert client.post(URL, json=config_json(new_tag())).status_code == 403


# Validation


def with_step(**changes: Any) -> dict[str, Any]:
    body = config_json("valid-tag")
    body["steps"][0].update(changes)
    return body


def with_steps(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {**config_json("valid-tag"), "steps": steps}


INVALID_BODIES = {
    "upper-case tag": (config_json("Image"), ["tag"]),
    "tag with a space": (config_json("bad tag"), ["tag"]),
    "tag starting with a dash": (config_json("-tag"), ["tag"]),
    "65-character tag": (config_json("a" * 65), ["tag"]),
    "empty tag": (config_json(""), ["tag"]),
    "empty name": (config_json("valid-tag", name="  "), ["name"]),
    "201-character name": (config_json("valid-tag", name="n" * 201), ["name"]),
    "bad step tag": (with_step(tag="Fetch"), ["steps", 0, "tag"]),
    "duplicate step tags": (config_json("t", steps=(("a", 1, "1"), ("a", 2, "1"))), ["steps"]),
    "0 points": (with_step(points=0), ["steps", 0, "points"]),
    "1,000,001 points": (with_step(points=1_000_001), ["steps", 0, "points"]),
    "fractional points": (with_step(points=1.5), ["steps", 0, "points"]),
    "negative cost": (with_step(cost="-0.01"), ["steps", 0, "cost"]),
    "5 decimal places (string)": (with_step(cost="0.00001"), ["steps", 0, "cost"]),
    "5 decimal places (number)": (with_step(cost=1.23456), ["steps", 0, "cost"]),
    "NaN cost": (with_step(cost="NaN"), ["steps", 0, "cost"]),
    "infinite cost": (with_step(cost="Infinity"), ["steps", 0, "cost"]),
    "boolean cost": (with_step(cost=True), ["steps", 0, "cost"]),
    "cost too large": (with_step(cost="100000000000000"), ["steps", 0, "cost"]),
    "total cost too large": (
        config_json("t", steps=(("a", 1, "99999999999999"), ("b", 1, "1"))),
        ["steps"],
    ),
    "no cost": (with_steps([{"tag": "a", "name": "A", "points": 1}]), ["steps", 0, "cost"]),
    "0 steps": (with_steps([]), ["steps"]),
    "501 steps": (
        config_json("t", steps=tuple((f"s{index}", 1, "1") for index in range(501))),
        ["steps"],
    ),
    "unknown field": ({**config_json("valid-tag"), "colour": "red"}, ["colour"]),
    "unknown step field": (with_step(colour="red"), ["steps", 0, "colour"]),
}


@pytest.mark.parametrize(
    ("body", "location"), list(INVALID_BODIES.values()), ids=list(INVALID_BODIES)
)
def test_invalid_configurations_are_422_naming_the_field(
    client: TestClient, admin: Login, db: Session, body: dict[str, Any], location: list[Any]
) -> None:
    response = post(client, admin, body)
    assert response.status_code == 422, response.text
    assert ["body", *location] in [error["loc"] for error in response.json()["detail"]]
    assert count_versions(db, body["tag"]) == 0


def test_validation_messages_say_what_is_wrong(client: TestClient, admin: Login) -> None:
    duplicate = post(client, admin, config_json("t", steps=(("a", 1, "1"), ("a", 2, "1"))))
    assert "repeated: 'a'" in duplicate.json()["detail"][0]["msg"]
    places = post(client, admin, with_step(cost="0.00001"))
    assert "4 decimal places" in places.json()["detail"][0]["msg"]


# Bulk upload (the file format)


def test_a_bulk_upload_answers_what_happened_to_each_configuration_in_order(
    client: TestClient, admin: Login, db: Session
) -> None:
    kept, changed, added = new_tag(), new_tag(), new_tag()
    first = put(client, admin, {"job_configs": [file_entry(kept), file_entry(changed)]})
    assert first.status_code == 200, first.text
    assert first.json() == [
        {"tag": kept, "version": 1, "result": "created"},
        {"tag": changed, "version": 1, "result": "created"},
    ]

    configs = [file_entry(added), file_entry(changed, name="Renamed"), file_entry(kept)]
    second = put(client, admin, {"job_configs": configs})
    assert second.status_code == 200, second.text
    assert second.json() == [
        {"tag": added, "version": 1, "result": "created"},
        {"tag": changed, "version": 2, "result": "new_version"},
        {"tag": kept, "version": 1, "result": "unchanged"},
    ]
    assert client.get(f"{URL}/{changed}").json()["name"] == "Renamed"
    assert count_versions(db, kept) == 1


def test_a_bulk_upload_and_a_post_of_the_same_content_agree(
    client: TestClient, admin: Login
) -> None:
    tag = new_tag()
    put(client, admin, {"job_configs": [file_entry(tag)]})
    assert post(client, admin, config_json(tag)).status_code == 200


def invalid_cost_file(valid: str, invalid: str) -> dict[str, Any]:
    bad = file_entry(invalid)
    bad["step_configurations"][1]["cost"] = "1.00001"
    return {"job_configs": [file_entry(valid), bad]}


def test_a_bulk_upload_with_one_invalid_entry_stores_nothing(
    client: TestClient, admin: Login, db: Session
) -> None:
    valid, invalid = new_tag(), new_tag()
    response = put(client, admin, invalid_cost_file(valid, invalid))
    assert response.status_code == 422
    locations = [error["loc"] for error in response.json()["detail"]]
    assert ["body", "job_configs", 1, "step_configurations", 1, "cost"] in locations
    assert count_versions(db, valid) == 0
    assert client.get(f"{URL}/{valid}").status_code == 404


INVALID_FILES = {
    "repeated tag": ({"job_configs": [file_entry("x"), file_entry("x")]}, ["job_configs"]),
    "101 configurations": (
        {"job_configs": [file_entry(f"c{index}") for index in range(101)]},
        ["job_configs"],
    ),
    "no configurations": ({"job_configs": []}, ["job_configs"]),
    "API field names": ({"job_configs": [config_json("x")]}, ["job_configs", 0, "steps"]),
    "unknown top-level field": (
        {"job_configs": [file_entry("x")], "version": 2},
        ["version"],
    ),
}


@pytest.mark.parametrize(
    ("body", "location"), list(INVALID_FILES.values()), ids=list(INVALID_FILES)
)
def test_invalid_files_are_422_naming_the_field(
    client: TestClient, admin: Login, db: Session, body: dict[str, Any], location: list[Any]
) -> None:
    response = put(client, admin, body)
    assert response.status_code == 422, response.text
    assert ["body", *location] in [error["loc"] for error in response.json()["detail"]]
    tags = {entry["tag"] for entry in body["job_configs"]}
    assert db.scalar(select(func.count()).where(JobConfiguration.tag.in_(tags))) == 0


def test_the_schema_describes_the_file_format(client: TestClient, db: Session) -> None:
    log_in(client, create_user(db))
    response = client.get(f"{URL}/schema")
    assert response.status_code == 200
    schema = response.json()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"job_configs"}
    assert schema["required"] == ["job_configs"]
    assert schema["additionalProperties"] is False
    entry = schema["$defs"]["JobConfigurationFileEntry"]
    assert set(entry["properties"]) == {
        "tag",
        "name",
        "step_configurations",
        "start_timeout",
        "step_timeout",
        "job_timeout",
    }
    step = schema["$defs"]["JobConfigurationStepCreate"]
    assert set(step["required"]) == {"tag", "name", "points", "cost"}
    assert step["properties"]["points"]["maximum"] == 1_000_000
    cost_as_string = next(
        option for option in step["properties"]["cost"]["anyOf"] if option["type"] == "string"
    )
    assert re.fullmatch(cost_as_string["pattern"].strip("^$"), "12.3456")
    assert not re.fullmatch(cost_as_string["pattern"].strip("^$"), "1.23456")


# Reading


def test_read_answers_the_latest_version_or_the_one_asked_for(
    client: TestClient, db: Session
) -> None:
    tag = new_tag()
    first = create_configuration(db, tag=tag, steps=(("a", 1, Decimal("1")),))
    create_configuration(db, tag=tag, steps=(("a", 2, Decimal("1")),))
    log_in(client, create_user(db))

    latest = client.get(f"{URL}/{tag}")
    assert latest.status_code == 200
    assert latest.json()["version"] == 2
    assert latest.json()["steps"][0]["points"] == 2

    old = client.get(f"{URL}/{tag}", params={"version": 1})
    assert old.status_code == 200
    assert old.json()["id"] == first.id
    assert old.json()["steps"] == [
        {"tag": "a", "name": "a", "points": 1, "cost": "1.0000", "position": 0}
    ]


def test_read_of_an_unknown_tag_or_version_is_404_saying_which(
    client: TestClient, db: Session
) -> None:
    tag = create_configuration(db).tag
    log_in(client, create_user(db))

    unknown_tag = client.get(f"{URL}/no-such-tag")
    assert unknown_tag.status_code == 404
    assert unknown_tag.json() == {"detail": "Job configuration 'no-such-tag' not found"}

    unknown_version = client.get(f"{URL}/{tag}", params={"version": 7})
    assert unknown_version.status_code == 404
    assert unknown_version.json() == {"detail": f"Job configuration {tag!r} has no version 7"}

    assert client.get(f"{URL}/no-such-tag", params={"version": 1}).status_code == 404
    assert client.get(f"{URL}/{tag}", params={"version": 0}).status_code == 422


def test_versions_are_listed_newest_first_page_by_page(client: TestClient, db: Session) -> None:
    tag = new_tag()
    for points in (1, 2, 3):
        create_configuration(db, tag=tag, steps=(("a", points, Decimal("1")),))
    log_in(client, create_user(db))

    everything = client.get(f"{URL}/{tag}/versions")
    assert everything.status_code == 200
    assert [item["version"] for item in everything.json()["items"]] == [3, 2, 1]
    assert [item["steps"][0]["points"] for item in everything.json()["items"]] == [3, 2, 1]
    assert everything.json()["next_cursor"] is None

    versions, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"{URL}/{tag}/versions", params=params).json()
        versions += [item["version"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert versions == [3, 2, 1]

    assert client.get(f"{URL}/no-such-tag/versions").status_code == 404


def test_the_list_walks_the_latest_version_of_every_tag(client: TestClient, db: Session) -> None:
    tags = sorted(new_tag() for _ in range(3))
    for tag in tags:
        create_configuration(db, tag=tag)
    create_configuration(db, tag=tags[1], steps=(("only", 5, Decimal("9.99")),))
    log_in(client, create_user(db))

    one_page = client.get(URL, params={"limit": 200}).json()
    walked: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = client.get(URL, params=params)
        assert page.status_code == 200
        assert len(page.json()["items"]) == 1
        walked += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert walked == one_page["items"]
    mine = {item["tag"]: item for item in walked if item["tag"] in tags}
    assert set(mine) == set(tags)
    assert mine[tags[1]]["version"] == 2
    assert mine[tags[1]]["total_cost"] == "9.9900"
    assert [item["version"] for item in mine.values()].count(1) == 2


def test_a_bad_cursor_is_422(client: TestClient, db: Session) -> None:
    log_in(client, create_user(db))
    assert client.get(URL, params={"cursor": "not-a-cursor"}).status_code == 422


def test_readers_are_sessions_and_api_keys_with_the_read_scope(
    client: TestClient, db: Session
) -> None:
    tag = create_configuration(db).tag
    owner = create_user(db)
    reader_key = {"X-API-Key": create_api_key(db, owner, scopes=(Scope.READ,))}
    ingest_key = {"X-API-Key": create_api_key(db, owner, scopes=(Scope.INGEST,))}
    paths = [URL, f"{URL}/{tag}", f"{URL}/{tag}/versions", f"{URL}/schema"]

    for path in paths:
        assert client.get(path).status_code == 401
        assert client.get(path, headers=reader_key).status_code == 200
        assert client.get(path, headers=ingest_key).status_code == 403
    log_in(client, owner)  # a client, not an admin
    for path in paths:
        assert client.get(path).status_code == 200


def test_a_list_takes_the_same_number_of_queries_whatever_its_size(
    client: TestClient, db: Session
) -> None:
    log_in(client, create_user(db))
    create_configuration(db)
    client.get(URL)  # warm up: the session's activity is written at most once a minute

    with captured_statements() as few:
        assert len(client.get(URL).json()["items"]) >= 1
    for _ in range(12):
        create_configuration(db, steps=(("a", 1, Decimal(1)), ("b", 2, Decimal(2))))
    with captured_statements() as many:
        assert len(client.get(URL).json()["items"]) >= 13

    assert len(few) == len(many)
    assert sum("job_configuration_steps" in statement for statement in many) == 1
