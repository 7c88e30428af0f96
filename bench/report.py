"""The lines a run prints (bench/README.md says what each means)."""

from __future__ import annotations

import statistics

from bench.results import Run, Step, percentile_ms
from bench.server import ServerProcess, resident_mb


def line(label: str, value: str, flush: bool = False) -> None:
    print(f"{label:<21}{value}", flush=flush)


def header(scenario: str, events: int, capacity: int, connections: int, users: int, duration: float) -> None:
    shape = f"{events} event{'s' if events > 1 else ''} of {capacity} seats"
    line("scenario", f"{scenario} ({shape}), {connections} connections, {users} users, {duration:g} s")


def load(run: Run) -> None:
    steps = list(run.steps.values())
    sent = sum(step.answered for step in steps)
    line("requests answered", f"{sent}  ({sent / run.elapsed:.0f}/s)")
    line("bookings made", f"{run.bookings}")
    line("bookings/s", f"{run.bookings / run.elapsed:.0f}")
    if run.scenario == "rush":
        line("purchases", f"{run.purchases}  (webhook applied, booking confirmed)")
        line("purchases/s", f"{run.purchases / run.elapsed:.0f}")
        print(f"{'step':<14}{'answers':>9}{'p50 ms':>9}{'p99 ms':>9}  by status")
        for step in steps:
            print(f"{step.name:<14}{step.answered:>9}{_ms(step, 0.50):>9}{_ms(step, 0.99):>9}  {_statuses(step)}")
    else:
        booking = run.steps["booking"]
        latencies = sorted(booking.latencies)
        if latencies:
            line(
                "latency ms",
                f"p50 {percentile_ms(latencies, 0.50):.1f}  p95 {percentile_ms(latencies, 0.95):.1f}  "
                f"p99 {percentile_ms(latencies, 0.99):.1f}  mean {statistics.fmean(latencies) * 1000:.1f}",
            )
        line("answers by status", _statuses(booking))
    if run.queue is not None:
        waiting_room(run)
    refusals = {f"{step.name} {code}": count for step in steps for code, count in step.refusals.items()}
    line("409 by code", f"{refusals or 0}")
    errors = {f"{step.name} {name}": count for step in steps for name, count in step.errors.items()}
    line("client errors", f"{errors or 0}")
    line("in flight at stop", f"{sum(step.in_flight for step in steps)}")


def waiting_room(run: Run) -> None:
    assert run.queue is not None
    joins = run.steps["join"].answered
    line("queue joins", f"{joins}  ({joins / run.elapsed:.0f}/s)")
    waits = sorted(run.queue.waits)
    line("admitted", f"{len(run.queue.admitted_at)}, {run.queue.out_of_order()} out of join order")
    if waits:
        p50, p99 = (percentile_ms(waits, fraction) / 1000 for fraction in (0.50, 0.99))
        line("time in queue", f"p50 {p50:.2f} s  p99 {p99:.2f} s")


def _ms(step: Step, fraction: float) -> str:
    return f"{percentile_ms(sorted(step.latencies), fraction):.1f}" if step.latencies else "-"


def _statuses(step: Step) -> str:
    return f"{dict(sorted(step.statuses.items()))}"


def server(run: Run, processes: list[ServerProcess], cpu: float) -> None:
    if not processes:
        line("server CPU", "not measured: no process found listening on the port here (pass --server-pid)")
        return
    pids = " ".join(str(process.pid) for process in processes)
    line("server CPU", f"{cpu:.2f} s over {run.elapsed:.1f} s = {cpu / run.elapsed:.2f} cores (pids {pids})")
    per_booking = f"{cpu / run.bookings * 1000:.3f} ms" if run.bookings else "-"
    line("CPU per booking", per_booking)
    if run.scenario == "rush":
        line("CPU per purchase", f"{cpu / run.purchases * 1000:.3f} ms" if run.purchases else "-")
    for process in processes:
        rss = resident_mb(process.pid)
        line("resident memory", f"pid {process.pid} {process.role}: {'gone' if rss is None else f'{rss:.0f} MB'}")


def ceiling(run: Run, tps: float | None, clients: int) -> None:
    if tps is None:
        line("pgbench tps", "not measured")
        return
    line("pgbench tps", f"{tps:.0f} (one booking per transaction, {clients} clients, same database, after the load)")
    line("service/PostgreSQL", f"{run.bookings / run.elapsed / tps:.2f} (bookings/s over pgbench tps)")
    if run.scenario == "rush":
        line("purchases/PostgreSQL", f"{run.purchases / run.elapsed / tps:.2f} (purchases/s over pgbench tps)")


def verdict(failures: list[str]) -> None:
    if not failures:
        line("RESULT", "OK")
        return
    print("!" * 72)
    for failure in failures:
        print(f"FAILURE: {failure}")
    print("!" * 72)
    line("RESULT", "FAILED")
