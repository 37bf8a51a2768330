"""serving: deployments, routes and their revisions, feature views

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 00:45:49.183959
"""

import sqlalchemy as sa
from alembic import op

import selfserve.store.tables

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feature_views",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("dataset", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("materialized_version", sa.Integer(), nullable=True),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("materialized_at", selfserve.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", selfserve.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", selfserve.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_feature_views_project_id_projects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feature_views")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_feature_views_project_id")),
    )
    with op.batch_alter_table("feature_views", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feature_views_project_id"), ["project_id"], unique=False)

    op.create_table(
        "serving_deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("model_ref", sa.String(length=140), nullable=False),
        sa.Column("artifact", sa.String(length=512), nullable=False),
        sa.Column("signature", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("ready_at", selfserve.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", selfserve.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", selfserve.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_serving_deployments_project_id_projects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serving_deployments")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_serving_deployments_project_id")),
    )
    with op.batch_alter_table("serving_deployments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_serving_deployments_project_id"), ["project_id"], unique=False)

    op.create_table(
        "serving_routes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", selfserve.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", selfserve.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_serving_routes_project_id_projects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serving_routes")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_serving_routes_project_id")),
    )
    with op.batch_alter_table("serving_routes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_serving_routes_project_id"), ["project_id"], unique=False)

    op.create_table(
        "serving_route_revisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("route_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("at", selfserve.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["route_id"],
            ["serving_routes.id"],
            name=op.f("fk_serving_route_revisions_route_id_serving_routes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serving_route_revisions")),
        sa.UniqueConstraint("route_id", "revision", name=op.f("uq_serving_route_revisions_route_id")),
    )
    with op.batch_alter_table("serving_route_revisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_serving_route_revisions_route_id"), ["route_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("serving_route_revisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_serving_route_revisions_route_id"))

    op.drop_table("serving_route_revisions")
    with op.batch_alter_table("serving_routes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_serving_routes_project_id"))

    op.drop_table("serving_routes")
    with op.batch_alter_table("serving_deployments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_serving_deployments_project_id"))

    op.drop_table("serving_deployments")
    with op.batch_alter_table("feature_views", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feature_views_project_id"))

    op.drop_table("feature_views")
