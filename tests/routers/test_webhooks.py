"""Webhook endpoints over HTTP: who may manage which, what is refused (and stores nothing), the
secret shown once, the delivery log and redelivery; the notifications jobs' endings queue."""

import base64
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.models import Customer, Job, JobStatus, User, WebhookDelivery, WebhookEndpoint
from app.services import deadlines, webhook_delivery
from app.services.webhook_delivery import DeliveryPolicy
from config import config
from tests.helpers.factories import bearer_token, create_admin, create_customer, create_user
from tests.helpers.scripts import Script, admin_script, new_job, pipeline
from tests.helpers.webhook_receiver import Receiver

ALL_TYPES = ["job.completed", "job.failed", "job.stalled", "job.cancelled"]
POLICY = DeliveryPolicy(
    timeout_seconds=5,
    base_delay_seconds=30,
    max_delay_seconds=3600,
    retry_window=timedelta(hours=72),
    disable_after=timedelta(hours=120),
    allow_private_addresses=True,
    allow_http=True,
    allowed_ports=None,
    jitter=0,
)


class Person:
    def __init__(self, client: TestClient, user: User) -> None:
        self.client, self.user = client, user
        self.headers = bearer_token(client, user)

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        return self.client.request(method, path, json=body, params=params, headers=self.headers)

    def create(self, **body: Any) -> Any:
        return self.request("POST", "/webhooks", {"event_types": ALL_TYPES, **body})


@pytest.fixture
def admin(db: Session, client: TestClient) -> Person:
    return Person(client, create_admin(db))


@pytest.fixture
def customer(db: Session) -> Customer:
    return create_customer(db)


@pytest.fixture
def member(db: Session, client: TestClient, customer: Customer) -> Person:
    return Person(client, create_user(db, customer=customer))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


def endpoints(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(WebhookEndpoint)) or 0


def deliver(db: Session, now: datetime, policy: DeliveryPolicy = POLICY) -> dict[str, int]:
    sessions = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    return webhook_delivery.deliver_due(sessions, now=now, max_claims=10, policy=policy)


def test_an_admin_registers_an_endpoint_for_every_customer_and_sees_its_secret_once(
    admin: Person,
) -> None:
    created = admin.create(url="https://hooks.example/all", description="Ops")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["customer_id"] is None
    assert body["event_types"] == ALL_TYPES
    assert (body["enabled"], body["disabled_at"], body["failing_since"]) == (True, None, None)
    secret = body["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32

    shown = admin.request("GET", f"/webhooks/{body['id']}").json()
    assert "secret" not in shown
    assert shown["url"] == "https://hooks.example/all"
    listed = admin.request("GET", "/webhooks").json()["items"]
    assert [item["id"] for item in listed] == [body["id"]]


def test_a_client_manages_its_own_customers_endpoints_only(
    db: Session, client: TestClient, admin: Person, member: Person, customer: Customer
) -> None:
    own = member.create(url="https://hooks.example/mine")
    assert own.status_code == 201, own.text
    assert own.json()["customer_id"] == customer.id

    other = create_customer(db)
    theirs = admin.create(url="https://hooks.example/theirs", customer_id=other.id).json()
    providers = admin.create(url="https://hooks.example/all").json()
    before = endpoints(db)
    refused = member.create(url="https://hooks.example/x", customer_id=other.id)
    assert refused.status_code == 404
    assert refused.json()["detail"] == f"Customer {other.id} not found"
    assert endpoints(db) == before

    for hidden in (theirs, providers):
        assert member.request("GET", f"/webhooks/{hidden['id']}").status_code == 404
        patched = member.request("PATCH", f"/webhooks/{hidden['id']}", {"enabled": False})
        assert patched.status_code == 404
        assert member.request("DELETE", f"/webhooks/{hidden['id']}").status_code == 404
        assert member.request("GET", f"/webhooks/{hidden['id']}/deliveries").status_code == 404
    listed = member.request("GET", "/webhooks").json()["items"]
    assert [item["id"] for item in listed] == [own.json()["id"]]
    assert admin.request("GET", "/webhooks", customer_id=other.id).json()["items"] == [
        {key: value for key, value in theirs.items() if key != "secret"}
    ]


WEBHOOK_OPERATIONS = [
    ("POST", "/webhooks"),
    ("GET", "/webhooks"),
    ("GET", "/webhooks/{id}"),
    ("PATCH", "/webhooks/{id}"),
    ("DELETE", "/webhooks/{id}"),
    ("POST", "/webhooks/{id}/rotate-secret"),
    ("GET", "/webhooks/{id}/deliveries"),
    ("POST", "/webhooks/{id}/deliveries/{delivery_id}/redeliver"),
]


def test_api_keys_cannot_manage_webhooks_and_the_document_says_so(
    db: Session, client: TestClient, admin: Person
) -> None:
    endpoint = admin.create(url="https://hooks.example/a").json()
    script = admin_script(db, client)
    paths = client.get("/openapi.json").json()["paths"]
    documented = {
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/webhooks")
        for method in operations
    }
    assert documented == {
        (method, path.replace("{id}", "{webhook_id}")) for method, path in WEBHOOK_OPERATIONS
    }
    for method, path in WEBHOOK_OPERATIONS:
        concrete = path.replace("{id}", str(endpoint["id"])).replace("{delivery_id}", "1")
        body = {"url": "https://a.example", "event_types": ALL_TYPES} if method != "GET" else None
        response = client.request(method, concrete, json=body, headers=script.headers)
        assert response.status_code == 403, (method, path)
        assert "bearer token" in response.json()["detail"]
        operation = paths[path.replace("{id}", "{webhook_id}")][method.lower()]
        assert "403" in operation["responses"], (method, path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"event_types": ["job.finished"]}, "job.completed"),
        ({"event_types": []}, "at least 1 item"),
        ({"url": "ftp://hooks.example/x"}, "absolute https URL"),
        ({"url": "hooks.example/x"}, "absolute https URL"),
        ({"url": "https://user:pw@hooks.example/x"}, "credentials"),
        ({"url": "https://hooks.example:99999/x"}, "not a valid URL"),
        ({"url": "https://hooks.example/x\x7f"}, "control characters"),
        ({"url": "https://hooks.exa\tmple/x"}, "control characters"),
        ({"url": "https://\u2603.example/x"}, "not a valid international name"),
    ],
)
def test_bad_input_is_refused_with_a_message_and_stores_nothing(
    db: Session, admin: Person, monkeypatch: pytest.MonkeyPatch, body: dict[str, Any], message: str
) -> None:
    monkeypatch.setattr(config.settings, "webhook_allow_http", False)
    response = admin.create(**{"url": "https://hooks.example/x", **body})
    assert response.status_code == 422, response.text
    assert message in response.text
    assert endpoints(db) == 0


def test_plain_http_is_refused_unless_allowed(
    db: Session, admin: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config.settings, "webhook_allow_http", False)
    refused = admin.create(url="http://hooks.example/x")
    assert refused.status_code == 422
    assert "must be an absolute https URL" in refused.json()["detail"]
    monkeypatch.setattr(config.settings, "webhook_allow_http", True)
    assert admin.create(url="http://hooks.example/x").status_code == 201


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hooks",
        "https://localhost:8443/hooks",
        "https://10.1.2.3/hooks",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hooks",
        "https://[::ffff:192.168.0.1]/hooks",
    ],
)
def test_private_loopback_and_link_local_destinations_are_refused_in_production(
    db: Session, admin: Person, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setattr(config.settings, "webhook_allow_private_addresses", False)
    response = admin.create(url=url)
    assert response.status_code == 422, response.text
    assert "not a public address" in response.json()["detail"]
    assert endpoints(db) == 0
    changed = admin.create(url="https://8.8.8.8/hooks").json()
    assert admin.request("PATCH", f"/webhooks/{changed['id']}", {"url": url}).status_code == 422


def test_an_endpoint_is_changed_paused_and_removed(admin: Person) -> None:
    created = admin.create(url="https://hooks.example/a").json()
    path = f"/webhooks/{created['id']}"
    changed = admin.request("PATCH", path, {"event_types": ["job.failed"], "enabled": False})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["event_types"], changed.json()["enabled"]) == (["job.failed"], False)
    assert admin.request("PATCH", path, {"url": None}).status_code == 422
    assert admin.request("PATCH", path, {"event_types": ["nope"]}).status_code == 422
    assert admin.request("DELETE", path).status_code == 204
    assert admin.request("GET", path).status_code == 404


def finish(script: Script, job_id: int, tags: list[str]) -> None:
    for tag in tags:
        assert script.event(job_id, kind="step", name=tag).status_code == 201


def test_job_endings_queue_a_notification_for_each_endpoint_that_asked(
    db: Session, client: TestClient, admin: Person, customer: Customer
) -> None:
    configuration, other = pipeline(db), create_customer(db)
    everything = admin.create(url="https://hooks.example/all").json()
    cancels = admin.create(
        url="https://hooks.example/cancels", customer_id=customer.id, event_types=["job.cancelled"]
    ).json()
    admin.create(url="https://hooks.example/other", customer_id=other.id)
    script = admin_script(db, client)
    tags = ["upload", "segment", "classify", "report"]

    done = new_job(script, configuration, customer.id)
    finish(script, done["id"], tags)
    finish(script, done["id"], ["upload"])  # still completed: nothing new
    failed = new_job(script, configuration, customer.id)
    script.event(failed["id"], kind="error", name="upload")
    script.event(failed["id"], kind="error", name="segment")  # failed already
    cancelled = new_job(script, configuration, customer.id)
    assert script.post(f"/jobs/{cancelled['id']}/cancel").status_code == 200
    assert script.post(f"/jobs/{cancelled['id']}/cancel").status_code == 200

    queued = db.execute(
        select(
            WebhookDelivery.endpoint_id, WebhookDelivery.event_type, WebhookDelivery.job_id
        ).order_by(WebhookDelivery.id)
    ).all()
    assert sorted(queued) == sorted(
        [
            (everything["id"], "job.completed", done["id"]),
            (everything["id"], "job.failed", failed["id"]),
            (everything["id"], "job.cancelled", cancelled["id"]),
            (cancels["id"], "job.cancelled", cancelled["id"]),
        ]
    )


def test_the_delivery_log_shows_attempts_and_the_next_try_and_redelivers_on_request(
    db: Session, client: TestClient, admin: Person, customer: Customer, receiver: Receiver
) -> None:
    endpoint = admin.create(url=receiver.url, customer_id=customer.id).json()
    script = admin_script(db, client)
    job = new_job(script, pipeline(db), customer.id)
    finish(script, job["id"], ["upload", "segment", "classify", "report"])
    receiver.answers.append(500)
    now = datetime.now(UTC)
    deliver(db, now)

    log = admin.request("GET", f"/webhooks/{endpoint['id']}/deliveries").json()["items"]
    [delivery] = log
    assert (delivery["event_type"], delivery["job_id"], delivery["status"]) == (
        "job.completed",
        job["id"],
        "pending",
    )
    assert (delivery["attempt_count"], delivery["last_status_code"]) == (1, 500)
    assert datetime.fromisoformat(delivery["next_attempt_at"]) == now + timedelta(seconds=30)
    assert [attempt["status_code"] for attempt in delivery["attempts"]] == [500]
    assert delivery["message_id"] == receiver.requests[0].headers["webhook-id"]

    deliver(db, now + timedelta(seconds=30))
    path = f"/webhooks/{endpoint['id']}/deliveries/{delivery['id']}/redeliver"
    again = admin.request("POST", path)
    assert again.status_code == 202, again.text
    assert again.json()["status"] == "pending"
    assert [attempt["status_code"] for attempt in again.json()["attempts"]] == [500, 200]
    deliver(db, datetime.now(UTC) + timedelta(seconds=1))
    assert len(receiver.requests) == 3
    assert len({request.headers["webhook-id"] for request in receiver.requests}) == 1
    delivered = admin.request(
        "GET", f"/webhooks/{endpoint['id']}/deliveries", status="delivered"
    ).json()["items"]
    assert [item["id"] for item in delivered] == [delivery["id"]]
    assert (
        admin.request("POST", f"/webhooks/{endpoint['id']}/deliveries/0/redeliver").status_code
        == 404
    )


def test_a_disabled_endpoint_says_so_and_enabling_it_resumes(
    db: Session, client: TestClient, admin: Person, customer: Customer, receiver: Receiver
) -> None:
    endpoint = admin.create(url=receiver.url, customer_id=customer.id).json()
    script = admin_script(db, client)
    job = new_job(script, pipeline(db), customer.id)
    finish(script, job["id"], ["upload", "segment", "classify", "report"])
    receiver.answers.extend([503, 503])
    policy = DeliveryPolicy(**{**POLICY.__dict__, "disable_after": timedelta(minutes=1)})
    now = datetime.now(UTC)
    deliver(db, now, policy)
    deliver(db, now + timedelta(minutes=2), policy)
    shown = admin.request("GET", f"/webhooks/{endpoint['id']}").json()
    assert shown["enabled"] is False
    assert shown["disabled_at"] is not None
    assert "HTTP 503" in shown["disabled_reason"]

    enabled = admin.request("PATCH", f"/webhooks/{endpoint['id']}", {"enabled": True}).json()
    assert (enabled["enabled"], enabled["disabled_at"], enabled["disabled_reason"]) == (
        True,
        None,
        None,
    )
    assert deliver(db, now + timedelta(hours=1), policy) == {"delivered": 1, "failed": 0}


def test_stalled_jobs_are_listed_filtered_and_show_their_deadline(
    db: Session, client: TestClient, customer: Customer
) -> None:
    script = admin_script(db, client)
    configuration = pipeline(db)
    configuration.step_timeout = 60
    db.flush()
    stalled, running = (new_job(script, configuration, customer.id) for _ in range(2))
    assert script.event(stalled["id"], kind="step", name="upload").status_code == 201
    detail = script.get(f"/jobs/{stalled['id']}").json()
    received = datetime.fromisoformat(detail["last_event_at"])
    assert datetime.fromisoformat(detail["deadline_at"]) == received + timedelta(seconds=60)
    assert (detail["eta"], detail["eta_p90"]) == (None, None)
    db.commit()
    assert deadlines.sweep_deadlines(db, now=received + timedelta(seconds=61), limit=10) == 1
    listed = script.get("/jobs", status="stalled", customer_id=customer.id).json()["items"]
    assert [job["id"] for job in listed] == [stalled["id"]]
    assert db.get(Job, running["id"]) is not None
    assert script.get(f"/jobs/{stalled['id']}").json()["status"] == JobStatus.STALLED.value


def test_the_openapi_document_describes_the_notifications(client: TestClient) -> None:
    webhooks = client.get("/openapi.json").json()["webhooks"]
    body = webhooks["job-notification"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("/WebhookNotification")
    assert "webhook-id" in webhooks["job-notification"]["post"]["description"]


def table_dump(db: Session) -> str:
    """What pg_dump would write of the endpoints' rows: COPY ... TO STDOUT."""
    dump = io.StringIO()
    cursor = db.connection().connection.cursor()
    cursor.copy_expert("COPY webhook_endpoints TO STDOUT", dump)
    return dump.getvalue()


def test_the_secret_is_stored_encrypted_and_shown_only_in_the_answer(
    db: Session, client: TestClient, admin: Person, customer: Customer, receiver: Receiver
) -> None:
    created = admin.create(url=receiver.url, customer_id=customer.id).json()
    secret = created["secret"]
    key = secret.removeprefix("whsec_")
    dump = table_dump(db)
    assert str(created["id"]) in dump
    assert secret not in dump
    assert key not in dump
    assert base64.b64decode(key).hex() not in dump
    row = db.get_one(WebhookEndpoint, created["id"])
    assert row.secret_encrypted is not None
    assert row.unencrypted_secret is None
    assert "secret" not in admin.request("GET", f"/webhooks/{created['id']}").json()

    script = admin_script(db, client)
    job = new_job(script, pipeline(db), customer.id)
    finish(script, job["id"], ["upload", "segment", "classify", "report"])
    assert deliver(db, datetime.now(UTC)) == {"delivered": 1, "failed": 0}
    [request] = receiver.requests
    assert request.signed_by(secret)
    assert len(request.headers["webhook-signature"].split(" ")) == 1


def test_a_rotated_secret_signs_beside_the_new_one_for_the_overlap_then_only_the_new_one(
    db: Session, client: TestClient, admin: Person, customer: Customer, receiver: Receiver
) -> None:
    created = admin.create(url=receiver.url, customer_id=customer.id).json()
    old = created["secret"]
    script = admin_script(db, client)
    configuration = pipeline(db)
    tags = ["upload", "segment", "classify", "report"]

    before = datetime.now(UTC)
    rotated = admin.request("POST", f"/webhooks/{created['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new.startswith("whsec_")
    assert new != old
    expires_at = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
    assert before + timedelta(hours=24) <= expires_at <= datetime.now(UTC) + timedelta(hours=24)
    shown = admin.request("GET", f"/webhooks/{created['id']}").json()
    assert "secret" not in shown
    assert shown["previous_secret_expires_at"] == rotated.json()["previous_secret_expires_at"]
    dump = table_dump(db)
    assert new not in dump
    assert old not in dump

    during = new_job(script, configuration, customer.id)
    finish(script, during["id"], tags)
    assert deliver(db, expires_at - timedelta(minutes=1)) == {"delivered": 1, "failed": 0}
    # A receiver that knows either secret accepts the message.
    assert receiver.requests[-1].signed_by(old)
    assert receiver.requests[-1].signed_by(new)
    assert len(receiver.requests[-1].headers["webhook-signature"].split(" ")) == 2

    after = new_job(script, configuration, customer.id)
    finish(script, after["id"], tags)
    assert deliver(db, expires_at) == {"delivered": 1, "failed": 0}
    assert receiver.requests[-1].signed_by(new)
    assert not receiver.requests[-1].signed_by(old)
    assert len(receiver.requests[-1].headers["webhook-signature"].split(" ")) == 1


def test_rotating_another_customers_endpoint_is_not_found_and_changes_nothing(
    db: Session, admin: Person, member: Person
) -> None:
    theirs = admin.create(url="https://hooks.example/all").json()
    before = table_dump(db)
    assert member.request("POST", f"/webhooks/{theirs['id']}/rotate-secret").status_code == 404
    assert admin.request("POST", "/webhooks/0/rotate-secret").status_code == 404
    assert table_dump(db) == before


def test_a_port_other_than_the_allowed_ones_is_refused_naming_the_rule(
    db: Session, admin: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config.settings, "webhook_allowed_ports", [443])
    refused = admin.create(url="https://8.8.8.8:8443/hooks")
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"] == (
        "url's port 8443 is not allowed: webhooks are sent to port 443 only "
        "(the WEBHOOK_ALLOWED_PORTS setting)"
    )
    assert endpoints(db) == 0
    assert admin.create(url="https://8.8.8.8/hooks").status_code == 201
    monkeypatch.setattr(config.settings, "webhook_allowed_ports", [443, 8443])
    assert admin.create(url="https://8.8.8.8:8443/hooks").status_code == 201
