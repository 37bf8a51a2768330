"""models: each principal's own MLflow account

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 19:45:00.000000
"""

import sqlalchemy as sa
from alembic import op

import selfserve.store.tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mlflow_identities",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("mlflow_user_id", sa.Integer(), nullable=True),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created_at", selfserve.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", selfserve.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["principal_id"],
            ["principals.id"],
            name=op.f("fk_mlflow_identities_principal_id_principals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mlflow_identities")),
        sa.UniqueConstraint("principal_id", name=op.f("uq_mlflow_identities_principal_id")),
        sa.UniqueConstraint("username", name=op.f("uq_mlflow_identities_username")),
    )


def downgrade() -> None:
    op.drop_table("mlflow_identities")
