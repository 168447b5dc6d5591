"""customer_scores index on (risk_band, value_at_risk DESC, customer_id)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 11:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_scores_band_var', 'customer_scores',
                    ['risk_band', sa.text('value_at_risk DESC'), 'customer_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_scores_band_var', table_name='customer_scores')
