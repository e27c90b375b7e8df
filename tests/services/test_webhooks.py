"""The webhooks service: a notification is queued for each enabled endpoint of the job's
customer, and of the provider, that asked for its type, and for no other; a client manages its
own customer's endpoints only (the provider's and other customers' answer as missing ones do).
Signing secrets are encrypted under the first configured key; the re-encryption task moves
every secret (a plain one from before encryption included) to it, and forgets rotated-out
secrets once their overlap is over."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from app.internal.errors import NotFound
from app.internal.secret_box import SecretBox, UnreadableSecret
from app.internal.webhook_signing import generate_secret
from app.models import WebhookDelivery, WebhookEndpoint, WebhookEventType
from app.scheduled import TaskRun, reencrypt_webhook_secrets
from app.schemas.webhook import WebhookCreate, WebhookUpdate
from app.services import webhooks
from app.services.access import Caller
from config import config
from tests.helpers.factories import (
    create_admin,
    create_configuration,
    create_customer,
    create_job,
    create_user,
)

URL = "http://127.0.0.1:9/hooks"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def endpoint(
    db: Session, caller: Caller, *types: WebhookEventType, customer_id: int | None = None
) -> int:
    webhook_in = WebhookCreate(url=URL, event_types=list(types), customer_id=customer_id)
    endpoint, _ = webhooks.create_webhook(db, caller=caller, webhook_in=webhook_in)
    return endpoint.id


def test_a_notification_goes_to_every_enabled_endpoint_that_asked_for_it(db: Session) -> None:
    admin = Caller(create_admin(db))
    customer, other = create_customer(db), create_customer(db)
    job = create_job(db, configuration=create_configuration(db), customer=customer)
    completed, failed = WebhookEventType.JOB_COMPLETED, WebhookEventType.JOB_FAILED
    wanted = {
        endpoint(db, admin, completed, customer_id=customer.id),
        endpoint(db, admin, completed, failed),  # the provider's, for every customer
    }
    endpoint(db, admin, failed, customer_id=customer.id)  # another type
    endpoint(db, admin, completed, customer_id=other.id)  # another customer
    disabled = endpoint(db, admin, completed, customer_id=customer.id)
    webhooks.update_webhook(
        db, caller=admin, webhook_id=disabled, webhook_in=WebhookUpdate(enabled=False)
    )

    assert webhooks.enqueue(db, job_ids=[job.id], event_type=completed, at=NOW) == 2
    queued = db.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job.id)).all()
    assert {delivery.endpoint_id for delivery in queued} == wanted
    assert {delivery.event_type for delivery in queued} == {completed.value}
    assert len({delivery.message_id for delivery in queued}) == 2
    assert webhooks.enqueue(db, job_ids=[], event_type=completed, at=NOW) == 0


def test_a_client_manages_its_own_customer_endpoints_only(db: Session) -> None:
    admin = Caller(create_admin(db))
    own, other = create_customer(db), create_customer(db)
    client = Caller(create_user(db, customer=own))
    mine = endpoint(db, client, WebhookEventType.JOB_FAILED)
    theirs = endpoint(db, admin, WebhookEventType.JOB_FAILED, customer_id=other.id)
    providers = endpoint(db, admin, WebhookEventType.JOB_FAILED)

    assert webhooks.get_webhook(db, caller=client, webhook_id=mine).customer_id == own.id
    listed, _ = webhooks.list_webhooks(db, caller=client, customer_id=None, limit=50, cursor=None)
    assert [each.id for each in listed] == [mine]
    for hidden in (theirs, providers):
        with pytest.raises(NotFound, match=f"Webhook {hidden} not found"):
            webhooks.get_webhook(db, caller=client, webhook_id=hidden)
        with pytest.raises(NotFound):
            webhooks.delete_webhook(db, caller=client, webhook_id=hidden)
    with pytest.raises(NotFound, match=f"Customer {other.id} not found"):
        endpoint(db, client, WebhookEventType.JOB_FAILED, customer_id=other.id)


OLD_KEY, NEW_KEY = "o" * 40, "n" * 40


def use_keys(monkeypatch: pytest.MonkeyPatch, *keys: str) -> None:
    monkeypatch.setattr(config.settings, "webhook_secret_keys", [SecretStr(key) for key in keys])


def test_a_secret_box_decrypts_under_any_of_its_keys_and_refuses_an_altered_token() -> None:
    old, both = SecretBox([OLD_KEY]), SecretBox([NEW_KEY, OLD_KEY])
    token = old.encrypt("whsec_abc")
    assert both.decrypt(token) == "whsec_abc"
    assert not both.under_first_key(token)
    assert both.under_first_key(both.encrypt("whsec_abc"))
    with pytest.raises(UnreadableSecret):
        SecretBox([NEW_KEY]).decrypt(token)
    altered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with pytest.raises(UnreadableSecret):
        old.decrypt(altered)


def test_the_task_moves_every_secret_to_the_first_key_and_encrypts_plain_ones(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = Caller(create_admin(db))
    use_keys(monkeypatch, OLD_KEY)
    under_old = webhooks.get_webhook(
        db, caller=admin, webhook_id=endpoint(db, admin, WebhookEventType.JOB_FAILED)
    )
    old_secret = SecretBox([OLD_KEY]).decrypt(under_old.secret_encrypted or "")
    # An endpoint as registered before secrets were encrypted.
    plain_secret = generate_secret()
    plain = WebhookEndpoint(url=URL, event_types=["job.failed"], unencrypted_secret=plain_secret)
    db.add(plain)
    db.flush()

    use_keys(monkeypatch, NEW_KEY, OLD_KEY)
    assert webhooks.reencrypt_secrets(db, now=NOW, limit=1).changed == 1
    assert webhooks.reencrypt_secrets(db, now=NOW, limit=10).changed == 1
    assert webhooks.reencrypt_secrets(db, now=NOW, limit=10).changed == 0
    use_keys(monkeypatch, NEW_KEY)  # the old key can go now
    db.refresh(under_old)
    db.refresh(plain)
    assert webhooks.signing_secrets(under_old, now=NOW) == [old_secret]
    assert webhooks.signing_secrets(plain, now=NOW) == [plain_secret]
    assert plain.unencrypted_secret is None
    assert SecretBox([NEW_KEY]).under_first_key(plain.secret_encrypted or "")


def test_auth_cleanup_encrypts_a_plain_secret_the_release_before_stored_and_reads_an_index(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = Caller(create_admin(db))
    use_keys(monkeypatch, NEW_KEY, OLD_KEY)
    encrypted = endpoint(db, admin, WebhookEventType.JOB_FAILED)
    # Registered during a deploy by the release from before encryption.
    plain_secret = generate_secret()
    plain = WebhookEndpoint(url=URL, event_types=["job.failed"], unencrypted_secret=plain_secret)
    db.add(plain)
    db.flush()
    before = db.get_one(WebhookEndpoint, encrypted).secret_encrypted

    db.execute(text("SET LOCAL enable_seqscan = off"))
    plan = "\n".join(
        db.scalars(
            text(
                "EXPLAIN SELECT id FROM webhook_endpoints WHERE secret IS NOT NULL "
                "ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED"
            )
        )
    )
    assert "Seq Scan" not in plan, plan
    assert webhooks.encrypt_plain_secrets(db, limit=10) == 1
    assert webhooks.encrypt_plain_secrets(db, limit=10) == 0
    db.refresh(plain)
    assert plain.unencrypted_secret is None
    assert webhooks.signing_secrets(plain, now=NOW) == [plain_secret]
    assert SecretBox([NEW_KEY]).under_first_key(plain.secret_encrypted or "")
    assert db.get_one(WebhookEndpoint, encrypted).secret_encrypted == before


def test_each_batch_of_the_task_goes_on_after_the_last_endpoint_the_one_before_saw(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = Caller(create_admin(db))
    use_keys(monkeypatch, OLD_KEY)
    ids = [endpoint(db, admin, WebhookEventType.JOB_FAILED) for _ in range(3)]
    use_keys(monkeypatch, NEW_KEY, OLD_KEY)
    starts: list[int] = []
    reencrypt = webhooks.reencrypt_secrets

    def recording(session: Session, **arguments: Any) -> webhooks.Reencrypted:
        starts.append(arguments["after_id"])
        return reencrypt(session, **arguments)

    monkeypatch.setattr(webhooks, "reencrypt_secrets", recording)
    sessions = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    run = TaskRun(now=NOW, batch_size=1, max_batches=10, session_factory=sessions)
    assert reencrypt_webhook_secrets(run) == {"webhook_secrets_reencrypted": 3}
    assert starts == [0, *ids]


def test_a_rotated_out_secret_signs_until_its_overlap_ends_and_is_then_forgotten(
    db: Session,
) -> None:
    admin = Caller(create_admin(db))
    webhook_id = endpoint(db, admin, WebhookEventType.JOB_FAILED)
    first = webhooks.signing_secrets(
        webhooks.get_webhook(db, caller=admin, webhook_id=webhook_id), now=NOW
    )
    rotated, second = webhooks.rotate_secret(db, caller=admin, webhook_id=webhook_id, now=NOW)
    overlap = timedelta(hours=config.settings.webhook_secret_overlap_hours)
    assert rotated.previous_secret_expires_at == NOW + overlap
    assert webhooks.signing_secrets(rotated, now=NOW + overlap / 2) == [second, *first]
    assert webhooks.signing_secrets(rotated, now=NOW + overlap) == [second]
    assert webhooks.reencrypt_secrets(db, now=NOW + overlap / 2, limit=10).changed == 0
    assert webhooks.reencrypt_secrets(db, now=NOW + overlap, limit=10).changed == 1
    assert rotated.previous_secret_encrypted is None
    assert rotated.previous_secret_expires_at is None

    # Rotating again within an overlap forgets the oldest secret at once.
    _, third = webhooks.rotate_secret(db, caller=admin, webhook_id=webhook_id, now=NOW)
    _, fourth = webhooks.rotate_secret(db, caller=admin, webhook_id=webhook_id, now=NOW)
    assert webhooks.signing_secrets(rotated, now=NOW) == [fourth, third]


def test_a_replaced_secret_no_key_decrypts_is_left_out_and_the_current_one_signs(
    db: Session, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    admin = Caller(create_admin(db))
    use_keys(monkeypatch, "l" * 40)
    webhook_id = endpoint(db, admin, WebhookEventType.JOB_FAILED)
    use_keys(monkeypatch, NEW_KEY)  # the key of the replaced secret was dropped too soon
    rotated, current = webhooks.rotate_secret(db, caller=admin, webhook_id=webhook_id, now=NOW)
    assert rotated.previous_secret_encrypted is not None
    assert webhooks.signing_secrets(rotated, now=NOW) == [current]
    assert f"Webhook {webhook_id}: its replaced signing secret" in caplog.text


def test_a_secret_no_key_decrypts_is_skipped_and_the_others_are_reencrypted(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = Caller(create_admin(db))
    use_keys(monkeypatch, "l" * 40)
    lost = endpoint(db, admin, WebhookEventType.JOB_FAILED)
    use_keys(monkeypatch, OLD_KEY)
    kept = endpoint(db, admin, WebhookEventType.JOB_FAILED)
    use_keys(monkeypatch, NEW_KEY, OLD_KEY)  # the first key was dropped too soon
    assert webhooks.reencrypt_secrets(db, now=NOW, limit=10).changed == 1
    box = SecretBox([NEW_KEY])
    assert box.under_first_key(db.get_one(WebhookEndpoint, kept).secret_encrypted or "")
    with pytest.raises(UnreadableSecret):
        webhooks.signing_secrets(db.get_one(WebhookEndpoint, lost), now=NOW)
