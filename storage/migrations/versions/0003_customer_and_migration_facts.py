"""agg_customers and agg_migration: per-place customer sums and segment migration cells

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # both start empty: until the next refresh fills them, answers use the raw tables
    op.create_table('agg_customers',
    sa.Column('state', sa.String(length=64), nullable=True),
    sa.Column('region', sa.String(length=64), nullable=True),
    sa.Column('segment', sa.String(length=32), nullable=True),
    sa.Column('churn_source', sa.String(length=16), nullable=True),
    sa.Column('risk_band', sa.String(length=8), nullable=True),
    sa.Column('customers', sa.Integer(), nullable=False),
    sa.Column('buyers', sa.Integer(), nullable=False),
    sa.Column('orders', sa.Integer(), nullable=False),
    sa.Column('repeaters', sa.Integer(), nullable=False),
    sa.Column('revenue', sa.Float(), nullable=True),
    sa.Column('value_at_risk', sa.Float(), nullable=True),
    sa.Column('clv', sa.Float(), nullable=True),
    sa.Column('clv_customers', sa.Integer(), nullable=False)
    )
    op.create_table('agg_migration',
    sa.Column('earlier', sa.Date(), nullable=False),
    sa.Column('later', sa.Date(), nullable=False),
    sa.Column('state', sa.String(length=64), nullable=True),
    sa.Column('region', sa.String(length=64), nullable=True),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('target', sa.String(length=32), nullable=False),
    sa.Column('customers', sa.Integer(), nullable=False),
    sa.Column('revenue', sa.Float(), nullable=False)
    )
    op.create_index('ix_agg_migration_pair', 'agg_migration', ['later', 'earlier'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_agg_migration_pair', table_name='agg_migration')
    op.drop_table('agg_migration')
    op.drop_table('agg_customers')
