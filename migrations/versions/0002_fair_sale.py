"""a fair sale: waiting room settings and a per-buyer ticket limit on an event's availability

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('event_availability', sa.Column('waiting_room_enabled', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('event_availability', sa.Column('waiting_room_admit_per_minute', sa.Integer(), server_default='60', nullable=False))
    op.add_column('event_availability', sa.Column('waiting_room_admission_minutes', sa.Integer(), server_default='10', nullable=False))
    op.add_column('event_availability', sa.Column('max_tickets_per_user', sa.Integer(), nullable=True))
    op.create_check_constraint(op.f('ck_event_availability_max_tickets_per_user_positive'), 'event_availability', 'max_tickets_per_user >= 1')
    op.create_check_constraint(op.f('ck_event_availability_waiting_room_rate_positive'), 'event_availability', 'waiting_room_admit_per_minute >= 1')
    op.create_check_constraint(op.f('ck_event_availability_waiting_room_admission_positive'), 'event_availability', 'waiting_room_admission_minutes >= 1')


def downgrade() -> None:
    op.drop_constraint(op.f('ck_event_availability_waiting_room_admission_positive'), 'event_availability', type_='check')
    op.drop_constraint(op.f('ck_event_availability_waiting_room_rate_positive'), 'event_availability', type_='check')
    op.drop_constraint(op.f('ck_event_availability_max_tickets_per_user_positive'), 'event_availability', type_='check')
    op.drop_column('event_availability', 'max_tickets_per_user')
    op.drop_column('event_availability', 'waiting_room_admission_minutes')
    op.drop_column('event_availability', 'waiting_room_admit_per_minute')
    op.drop_column('event_availability', 'waiting_room_enabled')
