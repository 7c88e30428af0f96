"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24 13:12:19.024326
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor_type', sa.String(length=32), nullable=False),
    sa.Column('actor_id', sa.BigInteger(), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('entity_type', sa.String(length=32), nullable=False),
    sa.Column('entity_id', sa.BigInteger(), nullable=False),
    sa.Column('before', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('after', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_index('ix_audit_log_entity', 'audit_log', ['entity_type', 'entity_id', 'occurred_at'], unique=False)
    op.create_index('ix_audit_log_occurred_at', 'audit_log', ['occurred_at'], unique=False)
    op.create_table('event_availability',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('event_name', sa.String(length=255), nullable=False),
    sa.Column('total_capacity', sa.Integer(), nullable=False),
    sa.Column('available_capacity', sa.Integer(), nullable=False),
    sa.Column('reserved_capacity', sa.Integer(), nullable=False),
    sa.Column('confirmed_capacity', sa.Integer(), nullable=False),
    sa.Column('price', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('sales_open', sa.Boolean(), nullable=False),
    sa.Column('event_status', sa.String(length=32), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_inbound_digest', sa.String(length=64), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('available_capacity + reserved_capacity + confirmed_capacity = total_capacity', name=op.f('ck_event_availability_capacity_sums')),
    sa.CheckConstraint('available_capacity >= 0', name=op.f('ck_event_availability_available_non_negative')),
    sa.CheckConstraint('confirmed_capacity >= 0', name=op.f('ck_event_availability_confirmed_non_negative')),
    sa.CheckConstraint('price >= 0', name=op.f('ck_event_availability_price_non_negative')),
    sa.CheckConstraint('reserved_capacity >= 0', name=op.f('ck_event_availability_reserved_non_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event_availability'))
    )
    op.create_index(op.f('ix_event_availability_event_id'), 'event_availability', ['event_id'], unique=True)
    op.create_table('idempotency_keys',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('response_body', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotency_keys')),
    sa.UniqueConstraint('user_id', 'key', name='uq_idempotency_keys_user_id_key')
    )
    op.create_index('ix_idempotency_keys_expires_at', 'idempotency_keys', ['expires_at'], unique=False)
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('message_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('message_id', name=op.f('uq_outbox_message_id'))
    )
    op.create_index('ix_outbox_published_at', 'outbox', ['published_at'], unique=False)
    op.create_index('ix_outbox_unpublished', 'outbox', ['id'], unique=False, postgresql_where=sa.text('published_at IS NULL'))
    op.create_table('bookings',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('booking_reference', sa.String(length=16), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('total_amount', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.Enum('pending', 'confirmed', 'cancelled', 'expired', 'refunded', 'completed', name='bookingstatus', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('payment_status', sa.Enum('pending', 'processing', 'completed', 'failed', 'refunded', name='paymentstatus', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('booking_date', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('payment_method', sa.String(length=32), nullable=True),
    sa.Column('payment_reference', sa.String(length=64), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('reservation_id', sa.BigInteger(), nullable=True),
    sa.Column('waitlist_entry_id', sa.BigInteger(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['event_availability.event_id'], name=op.f('fk_bookings_event_id_event_availability')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bookings')),
    sa.UniqueConstraint('booking_reference', name=op.f('uq_bookings_booking_reference')),
    sa.UniqueConstraint('payment_reference', name=op.f('uq_bookings_payment_reference'))
    )
    op.create_index('ix_bookings_event_id_status', 'bookings', ['event_id', 'status'], unique=False)
    op.create_index('ix_bookings_pending_expires_at', 'bookings', ['expires_at'], unique=False, postgresql_where=sa.text("status = 'pending'"))
    op.create_index('ix_bookings_user_id_booking_date', 'bookings', ['user_id', sa.literal_column('booking_date DESC')], unique=False)
    op.create_table('reservations',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('active', 'converted', 'released', 'expired', name='reservationstatus', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('booking_id', sa.BigInteger(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['event_availability.event_id'], name=op.f('fk_reservations_event_id_event_availability')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reservations'))
    )
    op.create_index('ix_reservations_active_expires_at', 'reservations', ['expires_at'], unique=False, postgresql_where=sa.text("status = 'active'"))
    op.create_index(op.f('ix_reservations_user_id'), 'reservations', ['user_id'], unique=False)
    op.create_table('waitlist_entries',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'notified', 'booked', 'expired', 'cancelled', name='waitliststatus', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('joined_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('notified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('booked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('booking_id', sa.BigInteger(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['event_availability.event_id'], name=op.f('fk_waitlist_entries_event_id_event_availability')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_waitlist_entries'))
    )
    op.create_index('ix_waitlist_entries_notified_expires_at', 'waitlist_entries', ['expires_at'], unique=False, postgresql_where=sa.text("status = 'notified'"))
    op.create_index('ix_waitlist_entries_promotion', 'waitlist_entries', ['event_id', 'status', 'priority', 'joined_at'], unique=False)
    op.create_index(op.f('ix_waitlist_entries_user_id'), 'waitlist_entries', ['user_id'], unique=False)
    op.create_index('uq_waitlist_entries_one_active_per_user_event', 'waitlist_entries', ['user_id', 'event_id'], unique=True, postgresql_where=sa.text("status IN ('pending', 'notified')"))


def downgrade() -> None:
    op.drop_index('uq_waitlist_entries_one_active_per_user_event', table_name='waitlist_entries', postgresql_where=sa.text("status IN ('pending', 'notified')"))
    op.drop_index(op.f('ix_waitlist_entries_user_id'), table_name='waitlist_entries')
    op.drop_index('ix_waitlist_entries_promotion', table_name='waitlist_entries')
    op.drop_index('ix_waitlist_entries_notified_expires_at', table_name='waitlist_entries', postgresql_where=sa.text("status = 'notified'"))
    op.drop_table('waitlist_entries')
    op.drop_index(op.f('ix_reservations_user_id'), table_name='reservations')
    op.drop_index('ix_reservations_active_expires_at', table_name='reservations', postgresql_where=sa.text("status = 'active'"))
    op.drop_table('reservations')
    op.drop_index('ix_bookings_user_id_booking_date', table_name='bookings')
    op.drop_index('ix_bookings_pending_expires_at', table_name='bookings', postgresql_where=sa.text("status = 'pending'"))
    op.drop_index('ix_bookings_event_id_status', table_name='bookings')
    op.drop_table('bookings')
    op.drop_index('ix_outbox_unpublished', table_name='outbox', postgresql_where=sa.text('published_at IS NULL'))
    op.drop_index('ix_outbox_published_at', table_name='outbox')
    op.drop_table('outbox')
    op.drop_index('ix_idempotency_keys_expires_at', table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    op.drop_index(op.f('ix_event_availability_event_id'), table_name='event_availability')
    op.drop_table('event_availability')
    op.drop_index('ix_audit_log_occurred_at', table_name='audit_log')
    op.drop_index('ix_audit_log_entity', table_name='audit_log')
    op.drop_table('audit_log')
