"""load_run stamps on the canonical tables

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 04:15:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

TABLES = ('customers', 'orders', 'order_items', 'payments', 'reviews')


def upgrade() -> None:
    # rows stored before the stamps count as written by a run 0, before every load: the
    # first refresh after the upgrade has no snapshot and reads them all anyway (left
    # NULL, "not written by a load", every later refresh would read them again)
    for table in TABLES:
        op.add_column(table, sa.Column('load_run', sa.Integer(), nullable=True))
        op.execute(f'UPDATE {table} SET load_run = 0')
        op.create_index(f'ix_{table}_load_run', table, ['load_run'], unique=False)


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f'ix_{table}_load_run', table_name=table)
        op.drop_column(table, 'load_run')
