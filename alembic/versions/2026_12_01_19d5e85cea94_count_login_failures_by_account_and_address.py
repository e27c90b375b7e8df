"""Count login failures by account and client address

Revision ID: 19d5e85cea94
Revises: b7d41e09a2c3
Create Date: 2026-12-01 22:00:00.000000

The counter on users throttled an account for everyone, so anyone who knew an email could lock
its owner out; failures are now rows naming the email and the client address. The counts in
flight are not carried over (a throttle at most a window old is forgotten, either way).

`users.failed_login_count` and `users.failed_login_window_started_at` stay: the previous release
reads and writes them until this one takes over (and again after a rollback). This release
never writes them; a later release drops them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "19d5e85cea94"
down_revision: str | None = "b7d41e09a2c3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
    )
    op.create_index("ix_login_failures_email_failed_at", "login_failures", ["email", "failed_at"])
    op.create_index(op.f("ix_login_failures_failed_at"), "login_failures", ["failed_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_login_failures_failed_at"), table_name="login_failures")
    op.drop_index("ix_login_failures_email_failed_at", table_name="login_failures")
    op.drop_table("login_failures")
