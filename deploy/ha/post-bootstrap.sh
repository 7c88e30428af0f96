#!/bin/sh
# Run once by Patroni on the first primary: the service's role and database.
set -e
psql "$1" -v ON_ERROR_STOP=1 \
  -c "CREATE ROLE bookings LOGIN PASSWORD '${BOOKINGS_DB_PASSWORD:-bookings}'" \
  -c "CREATE DATABASE bookings OWNER bookings"
