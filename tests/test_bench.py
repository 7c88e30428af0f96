"""The load generator itself, briefly, against a real two-worker service: each scenario must stay
runnable and honest (its own checks pass, a wrong answer makes it fail loudly)."""

from __future__ import annotations

import ast
import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator

import asyncpg
import pytest

from app.core.config import Settings
from bench.batch_cpu import WARM_UP_ROUNDS
from bench.checks import within
from bench.results import new_run
from bench.server import server_pids, with_workers
from tests.conftest import WEBHOOK_SECRET, make_settings
from tests.service_process import ROOT, ServiceProcess
from tests.support import process_env

USERS = 200
CHECKS = ("invariant violations", "201 answers / booking rows", "audit rows / outbox rows", "seat counters vs rows")


@pytest.fixture(scope="module")
def bench_settings(database_url: str, redis_url: str) -> Settings:
    return make_settings(database_url, redis_url)


@pytest.fixture(scope="module")
def service(bench_settings: Settings) -> Iterator[ServiceProcess]:
    env = {**process_env(bench_settings), "WORKERS": "2", "PAYMENT_WEBHOOK_SECRET": WEBHOOK_SECRET}
    process = ServiceProcess(env)
    try:
        process.start(timeout=90)  # two workers each import the app: slow on a busy machine
        yield process
    finally:
        process.stop_with_workers(server_pids(process.port))


def run_load(service: ServiceProcess, settings: Settings, *options: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "bench.load", "--base-url", service.url,
        "--database-url", settings.sqlalchemy_database_url,
        "--jwt-secret", settings.jwt_secret.get_secret_value(), "--webhook-secret", WEBHOOK_SECRET,
        "--connections", "8", "--duration", "2", "--users", str(USERS), "--additions", "1000000", *options,
    ]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def value(out: str, label: str) -> str:
    found = re.search(rf"^{re.escape(label)}\s+(.*)$", out, re.M)
    assert found, f"no {label!r} line in:\n{out}"
    return found.group(1)


def assert_checks_pass(out: str, checks: tuple[str, ...] = CHECKS) -> None:
    for check in checks:
        assert value(out, check).endswith("OK"), out
    assert value(out, "RESULT") == "OK", out


def assert_server_measured(out: str, service: ServiceProcess) -> None:
    """CPU from /proc for the supervisor and both workers, found by the port; each one's memory."""
    assert service.process is not None
    pids = re.search(r"\(pids ([\d ]+)\)$", value(out, "server CPU"))
    assert pids, out
    served = [int(pid) for pid in pids.group(1).split()]
    assert service.process.pid in served and len(served) == 3, out
    assert re.match(r"[\d.]+ ms$", value(out, "CPU per booking")), out
    memory = re.findall(r"^resident memory\s+pid (\d+) (supervisor|worker): \d+ MB$", out, re.M)
    assert sorted((int(pid), role) for pid, role in memory) == sorted(
        (pid, "supervisor" if pid == service.process.pid else "worker") for pid in served
    ), out


def booking_users(settings: Settings) -> tuple[int, int]:
    """Bookings of the generator's events, and how many users made them."""

    async def query() -> tuple[int, int]:
        dsn = settings.sqlalchemy_database_url.replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncpg.connect(dsn)
        try:
            row = await connection.fetchrow(
                "SELECT count(*), count(DISTINCT b.user_id) FROM bookings b JOIN event_availability e "
                "USING (event_id) WHERE e.event_name LIKE 'bench %'"
            )
        finally:
            await connection.close()
        return row[0], row[1]

    return asyncio.run(query())


def test_hot_books_as_many_users_and_states_the_postgresql_ratio(
    service: ServiceProcess, bench_settings: Settings
) -> None:
    run = run_load(service, bench_settings, "--scenario", "hot", "--capacity", "40", "--pgbench")
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    statuses = ast.literal_eval(value(out, "answers by status"))
    assert set(statuses) <= {201, 409} and 0 < statuses.get(201, 0) <= 40, out
    assert_checks_pass(out)
    assert_server_measured(out, service)
    assert re.match(r"[\d,]+ additions in [\d.]+ s$", value(out, "machine speed")), out
    assert re.match(r"\d+ \(one booking per transaction", value(out, "pgbench tps")), out
    assert re.match(r"[\d.]+ \(bookings/s over pgbench tps\)$", value(out, "service/PostgreSQL")), out
    bookings, users = booking_users(bench_settings)
    assert bookings <= 40 < USERS and users == bookings, "every booking should carry another user's token"


def test_spread_sells_several_events(service: ServiceProcess, bench_settings: Settings) -> None:
    run = run_load(service, bench_settings, "--scenario", "spread", "--events", "3", "--capacity", "20", "--no-pgbench")
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert set(ast.literal_eval(value(out, "answers by status"))) <= {201, 409}, out
    assert int(value(out, "bookings made")) <= 60, out
    assert_checks_pass(out, (*CHECKS, "seats oversold"))
    assert "pgbench tps" not in out


def test_rush_goes_through_the_whole_funnel(service: ServiceProcess, bench_settings: Settings) -> None:
    # Few connections: holds of one event queue behind its lock, so the first purchase comes soon.
    options = ("--scenario", "rush", "--capacity", "15", "--connections", "4", "--no-pgbench")
    run = run_load(service, bench_settings, *options)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert int(value(out, "purchases").split()[0]) >= 1, out
    for step, expected in (("availability", {200}), ("hold", {201, 409}), ("booking", {201, 409}),
                           ("payment", {201, 409}), ("webhook", {200, 409})):  # fmt: skip
        answers = re.search(rf"^{step}\s+\d+\s+\S+\s+\S+\s+(\{{.*\}})$", out, re.M)
        assert answers and set(ast.literal_eval(answers.group(1))) <= expected, out
    assert_checks_pass(out, (*CHECKS, "seats oversold", "201 holds / hold rows", "webhooks applied / confirmed"))
    assert_server_measured(out, service)
    assert re.match(r"[\d.]+ ms$", value(out, "CPU per purchase")), out


def test_rush_through_the_waiting_room_admits_in_join_order(service: ServiceProcess, bench_settings: Settings) -> None:
    options = ("--scenario", "rush", "--queue", "--admit-per-minute", "6000", "--max-tickets-per-user", "1")
    run = run_load(service, bench_settings, *options, "--capacity", "15", "--connections", "6", "--no-pgbench")
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert re.match(r"\d+  \(\d+/s\)$", value(out, "queue joins")), out
    admitted = re.match(r"(\d+), 0 out of join order$", value(out, "admitted"))
    assert admitted and int(admitted.group(1)) >= 1, out
    assert re.match(r"p50 [\d.]+ s  p99 [\d.]+ s$", value(out, "time in queue")), out
    assert_checks_pass(out, (*CHECKS, "seats oversold", "buyers over their limit", "201 holds / hold rows"))


def test_any_answer_but_the_expected_ones_is_a_failure() -> None:
    run = new_run("rush", [1])
    run.steps["hold"].statuses.update({201: 5, 409: 3})
    run.steps["hold"].refusals.update({"insufficient_capacity": 3})
    assert run.failures() == []
    run.steps["booking"].statuses[503] += 1
    run.steps["payment"].statuses[409] += 1
    run.steps["payment"].refusals["version_conflict"] += 1
    run.steps["webhook"].errors["ProtocolError"] += 1
    assert run.failures() == [
        "booking: unexpected answers {503: 1}",
        "payment: 409 for another reason than seats running out {'version_conflict': 1}",
        "webhook: client errors {'ProtocolError': 1}",
    ]


def test_rows_may_exceed_answers_only_by_the_unanswered() -> None:
    assert within(10, 10, 0)[1] and within(12, 10, 2)[1]
    assert not within(13, 10, 2)[1] and not within(9, 10, 2)[1]


def test_rush_fails_loudly_on_an_unexpected_answer(service: ServiceProcess, bench_settings: Settings) -> None:
    """Webhooks signed with another secret are refused (401): the run must not pass for a good one."""
    run = run_load(
        service, bench_settings, "--scenario", "rush", "--capacity", "15", "--no-pgbench",
        "--connections", "2", "--webhook-secret", "not-the-server's-secret",
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert re.search(r"^FAILURE: webhook: unexpected answers \{401: \d+\}$", out, re.M), out
    assert value(out, "RESULT") == "FAILED", out


def test_request_cpu_prints_the_cpu_of_each_request(service: ServiceProcess, bench_settings: Settings) -> None:
    command = [
        sys.executable, "-m", "bench.request_cpu", "--base-url", service.url,
        "--jwt-secret", bench_settings.jwt_secret.get_secret_value(),
        "--method", "POST", "--path", "/api/v1/bookings/", "--body", '{"event_id": 1, "quantity": 0}',
        "--connections", "4", "--users", str(USERS), "--duration", "1",
    ]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    for label in ("user CPU per request", "sys CPU per request"):
        assert re.fullmatch(r"\d+ µs", value(run.stdout, label)), run.stdout
    assert re.fullmatch(r"\{422: \d+\}", value(run.stdout, "answers by status")), run.stdout


def test_the_server_is_found_by_its_port_or_by_its_supervisor(service: ServiceProcess) -> None:
    assert service.process is not None
    found = server_pids(service.port)
    assert service.process.pid in found and len(found) == 3  # the supervisor and its two workers
    assert with_workers({service.process.pid}) == found  # `--server-pid`


def test_batch_cpu_books_through_the_batcher_and_prints_both_kinds(bench_settings: Settings) -> None:
    command = [sys.executable, "-m", "bench.batch_cpu", "--rounds", "3", "--size", "4", "--events", "5"]
    run = subprocess.run(
        command, cwd=ROOT, env=process_env(bench_settings), capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for kind in ("hot", "spread"):
        assert re.search(rf"^{kind}\s+[\d.]+ ms CPU per batch\s+\d+ us per booking$", run.stdout, re.M), run.stdout
    assert re.search(r"^spread/hot [\d.]+ \(CPU per batch, same run\)$", run.stdout, re.M), run.stdout

    async def booked() -> int:
        dsn = bench_settings.sqlalchemy_database_url.replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncpg.connect(dsn)
        try:
            return int(await connection.fetchval("SELECT count(*) FROM bookings WHERE event_id >= 9000001"))
        finally:
            await connection.close()

    assert asyncio.run(booked()) == WARM_UP_ROUNDS * 4 + 2 * 3 * 4
