"""API keys gain the `configure` scope

An administrator's key with `configure` may write job configurations (POST and PUT
/job-configurations), so that CI pushes a pipeline's steps with a key rather than a password.
The API refuses the scope to a client's key; the database only learns the value.

downgrade() takes the scope out of every key (a key left with no scope is deleted, since it
could do nothing) and rebuilds the type without it, as PostgreSQL cannot drop an enum value.

Revision ID: b7d2e9c4f1a6
Revises: c8e5d1a7f3b2
Create Date: 2026-12-07 11:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "b7d2e9c4f1a6"
down_revision: str | None = "c8e5d1a7f3b2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Allowed in a transaction since PostgreSQL 12; the value is not used in this one.
    op.execute("ALTER TYPE api_key_scope ADD VALUE IF NOT EXISTS 'configure'")


def downgrade() -> None:
    op.execute(
        "UPDATE api_keys SET scopes = array_remove(scopes, 'configure') "
        "WHERE 'configure' = ANY (scopes)"
    )
    op.execute("DELETE FROM api_keys WHERE cardinality(scopes) = 0")
    op.execute("ALTER TYPE api_key_scope RENAME TO api_key_scope_old")
    op.execute("CREATE TYPE api_key_scope AS ENUM ('ingest', 'read')")
    op.execute(
        "ALTER TABLE api_keys ALTER COLUMN scopes TYPE api_key_scope[] "
        "USING scopes::text[]::api_key_scope[]"
    )
    op.execute("DROP TYPE api_key_scope_old")
