"""Webhook signing secrets encrypted and rotatable; deliveries leased in a column of their own

`webhook_endpoints` gains `secret_encrypted` (the secret under WEBHOOK_SECRET_KEYS) and, for a
rotation's overlap, `previous_secret_encrypted` and `previous_secret_expires_at`. The plain
text column `secret` becomes nullable: the encryption needs the key, which lives in the
application's settings, and a migration imports no application code, so the rows are
encrypted by the `reencrypt_webhook_secrets` task, which the deploy's migration step runs right
after `upgrade head` (and empties `secret` as it goes). Until then the worker leaves those
endpoints' deliveries waiting. The column stays for the release before this one, which still
serves during the deploy: the endpoints it registers meanwhile have a plain secret, which the
`auth_cleanup` task encrypts (a partial index finds them). Its worker cannot sign for an
endpoint whose secret is encrypted: its runs fail until it is replaced, and those deliveries
are sent by the new one.

`webhook_deliveries.leased_until` holds a send's lease, which `next_attempt_at` held: a
redelivery asked for while the delivery is being sent no longer makes it due at once, so it
is never sent twice at the same time.

A downgrade cannot decrypt: endpoints whose secret is stored encrypted only are disabled, with a
reason that says to register them again.

Revision ID: c3e9f1a7d254
Revises: a1f4c7e2b9d3
Create Date: 2026-12-07 11:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c3e9f1a7d254"
down_revision: str | None = "a1f4c7e2b9d3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("webhook_endpoints", sa.Column("secret_encrypted", sa.Text(), nullable=True))
    op.add_column(
        "webhook_endpoints", sa.Column("previous_secret_encrypted", sa.Text(), nullable=True)
    )
    op.add_column(
        "webhook_endpoints",
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.alter_column("webhook_endpoints", "secret", existing_type=sa.String(100), nullable=True)
    op.add_column(
        "webhook_deliveries",
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_webhook_endpoints_unencrypted",
        "webhook_endpoints",
        ["id"],
        unique=False,
        postgresql_where=sa.text("secret IS NOT NULL"),
    )


def downgrade() -> None:
    # Only the application can decrypt: an endpoint whose secret exists encrypted only gets a
    # random one nobody knows, and is disabled saying so (a receiver could not verify it).
    op.execute(
        """
        UPDATE webhook_endpoints
        SET secret = 'whsec_' || encode(
                decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'),
                'base64'
            ),
            enabled = false,
            disabled_at = now(),
            disabled_reason = 'its signing secret was encrypted, and a downgrade cannot decrypt '
                'it: delete the endpoint and register it again'
        WHERE secret IS NULL
        """
    )
    op.drop_index(
        "ix_webhook_endpoints_unencrypted",
        table_name="webhook_endpoints",
        postgresql_where=sa.text("secret IS NOT NULL"),
    )
    op.drop_column("webhook_deliveries", "leased_until")
    op.alter_column("webhook_endpoints", "secret", existing_type=sa.String(100), nullable=False)
    op.drop_column("webhook_endpoints", "previous_secret_expires_at")
    op.drop_column("webhook_endpoints", "previous_secret_encrypted")
    op.drop_column("webhook_endpoints", "secret_encrypted")
