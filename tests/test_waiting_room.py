"""The virtual waiting room: admission in join order across instances, personal passes, outages."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.clock import clock
from app.core.config import Settings
from app.core.security import create_access_token
from tests.checks import assert_invariant, count
from tests.conftest import Api, make_settings, running_app
from tests.redis_server import ThrowawayRedis
from tests.service_process import ServiceProcess
from tests.support import process_env

QUEUE = "/api/v1/queue"


async def enable(api: Api, event_id: int, admit_per_minute: int, enabled: bool = True, minutes: int = 10) -> Any:
    body = {"enabled": enabled, "admit_per_minute": admit_per_minute, "admission_minutes": minutes}
    response = await api.client.put(f"/api/v1/admin/queue/{event_id}", json=body, headers=api.admin())
    assert response.status_code == 200, response.text
    return response.json()


async def join(api: Api, user_id: int, event_id: int) -> httpx.Response:
    return await api.client.post(f"{QUEUE}/{event_id}/join", headers=api.headers(user_id))


def admitted(api: Api, user_id: int, token: str) -> dict[str, str]:
    return api.headers(user_id, **{"X-Admission-Token": token})


async def test_admin_settings_are_validated_audited_and_shown(api: Api) -> None:
    await api.create_event(1, capacity=10)
    room = await enable(api, 1, admit_per_minute=120)
    assert room == {
        "event_id": 1,
        "enabled": True,
        "admit_per_minute": 120,
        "admission_minutes": 10,
        "waiting": 0,
        "admitted": 0,
        "admission_rate_per_minute": 120.0,
        "oldest_wait_seconds": 0.0,
    }
    await enable(api, 1, admit_per_minute=120, enabled=False)
    await enable(api, 1, admit_per_minute=30, enabled=False)
    audit = await api.client.get("/api/v1/admin/audit/?entity_type=waiting_room", headers=api.admin())
    actions = sorted(entry["action"] for entry in audit.json()["items"])
    assert actions == [
        "waiting_room.disabled",
        "waiting_room.enabled",
        "waiting_room.rate_changed",
        "waiting_room.rate_changed",
    ]

    for bad in (
        {"enabled": True, "admit_per_minute": 0},
        {"enabled": True, "admit_per_minute": "5"},
        {"enabled": "yes", "admit_per_minute": 5},
        {"enabled": True},
    ):
        refused = await api.client.put("/api/v1/admin/queue/1", json=bad, headers=api.admin())
        assert refused.status_code == 422, bad
    as_user = await api.client.put(
        "/api/v1/admin/queue/1", json={"enabled": True, "admit_per_minute": 5}, headers=api.headers(5)
    )
    assert as_user.status_code == 403
    unknown = await api.client.get("/api/v1/admin/queue/99", headers=api.admin())
    assert unknown.status_code == 404


async def test_without_admission_holds_bookings_and_waitlist_are_refused(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=10)
    await enable(api, 1, admit_per_minute=60)
    attempts = [
        await api.book(7, 1),
        await api.client.post("/api/v1/availability/1/reserve", json={"quantity": 1}, headers=api.headers(7)),
        await api.client.post("/api/v1/waitlist/", json={"event_id": 1, "quantity": 1}, headers=api.headers(7)),
        await api.client.post(
            "/api/v1/bookings/",
            json={"event_id": 1, "quantity": 1},
            headers=api.headers(7, **{"X-Admission-Token": "forged"}),
        ),
    ]
    for response in attempts:
        assert response.status_code == 403, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "admission_required"
        assert response.json()["join_url"] == "/api/v1/queue/1/join"
    for table in ("bookings", "reservations", "waitlist_entries"):
        assert await count(db, table) == 0
    assert (await api.availability(1))["available_capacity"] == 10


async def test_admission_is_personal_for_one_event_and_lapses(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=10)
    await api.create_event(2, capacity=10)
    await enable(api, 1, admit_per_minute=1, minutes=10)
    await enable(api, 2, admit_per_minute=1)

    first = await join(api, 7, 1)
    assert first.status_code == 201
    ticket = first.json()
    assert ticket["status"] == "admitted" and ticket["position"] == 0 and ticket["ticket_id"] == "WR-1-1"
    token = ticket["admission_token"]
    expires = datetime.fromisoformat(ticket["admission_expires_at"])
    assert timedelta(minutes=9) < expires - clock.now() <= timedelta(minutes=10)

    second = (await join(api, 8, 1)).json()
    assert second["status"] == "waiting" and second["position"] == 1 and second["admission_token"] is None
    assert second["estimated_wait_seconds"] > 0
    again = await join(api, 8, 1)
    assert again.status_code == 200 and again.json()["ticket_id"] == second["ticket_id"]

    not_joined = await api.client.get(f"{QUEUE}/1", headers=api.headers(9))
    assert not_joined.status_code == 404

    someone_else = await api.client.post(
        "/api/v1/bookings/", json={"event_id": 1, "quantity": 1}, headers=admitted(api, 8, token)
    )
    other_event = await api.client.post(
        "/api/v1/bookings/", json={"event_id": 2, "quantity": 1}, headers=admitted(api, 7, token)
    )
    assert someone_else.status_code == other_event.status_code == 403

    hold = await api.client.post(
        "/api/v1/availability/1/reserve", json={"quantity": 2}, headers=admitted(api, 7, token)
    )
    assert hold.status_code == 201, hold.text
    booked = await api.client.post(
        "/api/v1/bookings/", json={"event_id": 1, "quantity": 1}, headers=admitted(api, 7, token)
    )
    assert booked.status_code == 201, booked.text

    clock.advance(timedelta(minutes=11))
    lapsed = await api.client.post(
        "/api/v1/bookings/", json={"event_id": 1, "quantity": 1}, headers=admitted(api, 7, token)
    )
    assert lapsed.status_code == 403
    assert await count(db, "bookings") == 1
    await assert_invariant(db)


async def test_booking_your_own_hold_needs_no_new_admission(api: Api) -> None:
    await api.create_event(1, capacity=10)
    await enable(api, 1, admit_per_minute=1, minutes=1)
    token = (await join(api, 7, 1)).json()["admission_token"]
    hold = await api.client.post(
        "/api/v1/availability/1/reserve", json={"quantity": 2}, headers=admitted(api, 7, token)
    )
    assert hold.status_code == 201, hold.text
    clock.advance(timedelta(minutes=2))  # the admission has lapsed, the hold (10 minutes) has not
    booked = await api.book(7, 1, quantity=2, reservation_id=hold.json()["id"])
    assert booked.status_code == 201, booked.text


async def test_turning_the_room_off_and_on_again(api: Api) -> None:
    await api.create_event(1, capacity=10)
    await enable(api, 1, admit_per_minute=1)
    token = (await join(api, 7, 1)).json()["admission_token"]
    waiting = (await join(api, 8, 1)).json()
    assert waiting["status"] == "waiting" and waiting["room_enabled"]

    await enable(api, 1, admit_per_minute=1, enabled=False)
    assert (await api.book(9, 1)).status_code == 201  # everyone buys at once again
    kept = (await api.client.get(f"{QUEUE}/1", headers=api.headers(8))).json()
    assert (kept["status"], kept["room_enabled"], kept["ticket_id"]) == ("waiting", False, waiting["ticket_id"])
    early = (await join(api, 11, 1)).json()  # a place taken while the room is off is a place, not a pass
    assert early["status"] == "waiting" and early["admission_token"] is None

    await enable(api, 1, admit_per_minute=1)
    assert (await api.book(10, 1)).status_code == 403
    assert (await api.book(11, 1)).status_code == 403  # joining early did not skip the line
    assert (await api.client.get(f"{QUEUE}/1", headers=api.headers(11))).json()["position"] == 2
    with_pass = await api.client.post(
        "/api/v1/bookings/", json={"event_id": 1, "quantity": 1}, headers=admitted(api, 7, token)
    )
    assert with_pass.status_code == 201  # admitted before: still admitted


async def test_a_thousand_buyers_on_two_instances_are_admitted_in_join_order(settings: Settings) -> None:
    buyers = range(1000, 2000)
    async with running_app(settings) as first, running_app(settings) as second:
        await first.create_event(1, capacity=10)
        await enable(first, 1, admit_per_minute=60_000)  # a thousand a second
        joined = await asyncio.gather(*(join(first if user % 2 else second, user, 1) for user in buyers))
        assert {response.status_code for response in joined} == {201}
        tickets = {user: response.json() for user, response in zip(buyers, joined, strict=True)}
        assert sorted(int(t["ticket_id"].rsplit("-", 1)[1]) for t in tickets.values()) == list(range(1, 1001))

        latest = dict(tickets)
        for _ in range(60):
            waiting = [user for user, ticket in latest.items() if ticket["status"] == "waiting"]
            if not waiting:
                break
            await asyncio.sleep(0.25)
            asks = [
                (first if user % 2 else second).client.get(f"{QUEUE}/1", headers=first.headers(user))
                for user in waiting
            ]
            answers = await asyncio.gather(*asks)
            for user, answer in zip(waiting, answers, strict=True):
                assert answer.json()["position"] <= latest[user]["position"], "a position went backwards"
                latest[user] = answer.json()
        overview = (await second.client.get("/api/v1/admin/queue/1", headers=second.admin())).json()

    assert all(ticket["status"] == "admitted" for ticket in latest.values())
    by_ticket = sorted(latest.values(), key=lambda t: int(t["ticket_id"].rsplit("-", 1)[1]))
    admitted_at = [datetime.fromisoformat(t["admitted_at"]) for t in by_ticket]
    out_of_order = sum(1 for earlier, later in itertools.pairwise(admitted_at) if later < earlier)
    assert out_of_order == 0
    assert overview["admitted"] == 1000 and overview["waiting"] == 0


async def test_redis_outage_keeps_admissions_and_places(database_url: str, db: AsyncConnection) -> None:
    redis = ThrowawayRedis()
    redis.start()
    try:
        async with running_app(make_settings(database_url, redis.url)) as api:
            await api.create_event(1, capacity=10)
            await enable(api, 1, admit_per_minute=1)
            token = (await join(api, 7, 1)).json()["admission_token"]
            place = (await join(api, 8, 1)).json()
            assert place["status"] == "waiting"

            redis.stop()
            refused = await join(api, 9, 1)
            assert refused.status_code == 503 and refused.headers["Retry-After"]
            booked = await api.client.post(
                "/api/v1/bookings/", json={"event_id": 1, "quantity": 1}, headers=admitted(api, 7, token)
            )
            assert booked.status_code == 201, booked.text

            redis.start()  # the same data directory: its append-only file brings the line back
            for _ in range(40):
                answer = await api.client.get(f"{QUEUE}/1", headers=api.headers(8))
                if answer.status_code == 200:
                    break
                await asyncio.sleep(0.25)
            assert answer.status_code == 200, answer.text
            assert answer.json()["ticket_id"] == place["ticket_id"]
            assert answer.json()["position"] <= place["position"]
    finally:
        redis.close()
    await assert_invariant(db)


async def test_the_stream_tells_the_position_then_the_admission(api: Api) -> None:
    await api.create_event(1, capacity=10)
    await enable(api, 1, admit_per_minute=120)  # one every half second
    await join(api, 7, 1)
    assert (await join(api, 8, 1)).json()["status"] == "waiting"
    response = await api.client.get(f"{QUEUE}/1/stream", headers=api.headers(8), timeout=30)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block.split("\n") for block in response.text.strip().split("\n\n")]
    kinds = [lines[0] for lines in events]
    assert kinds[0] == "event: position" and kinds[-1] == "event: admitted"
    final = json.loads(events[-1][1].removeprefix("data: "))
    assert final["status"] == "admitted" and final["admission_token"]
    metrics = (await api.client.get("/metrics")).text
    assert 'waiting_room_admitted_total{event_id="1"}' in metrics
    assert "waiting_room_wait_seconds_count" in metrics


async def test_the_line_outlives_an_instance_killed_with_sigkill(settings: Settings) -> None:
    service = ServiceProcess(process_env(settings))
    service.start()
    try:
        async with running_app(settings) as survivor:
            await survivor.create_event(1, capacity=10)
            await enable(survivor, 1, admit_per_minute=1)
            async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
                places = [
                    (await client.post(f"{QUEUE}/1/join", headers=survivor.headers(user))).json() for user in (7, 8, 9)
                ]
            service.kill()
            for user, place in zip((7, 8, 9), places, strict=True):
                kept = (await survivor.client.get(f"{QUEUE}/1", headers=survivor.headers(user))).json()
                assert kept["ticket_id"] == place["ticket_id"]
                assert kept["position"] <= place["position"]
            latecomer = (await join(survivor, 10, 1)).json()
            assert latecomer["ticket_id"] == "WR-1-4" and latecomer["position"] == 3
    finally:
        service.stop()


async def test_the_ticket_stream_ends_when_its_token_expires(api: Api) -> None:
    await api.create_event(1, capacity=10)
    await enable(api, 1, admit_per_minute=1)
    await join(api, 7, 1)
    assert (await join(api, 8, 1)).json()["status"] == "waiting"
    short = create_access_token(api.settings, 8, expires_in=timedelta(seconds=2))
    response = await api.client.get(f"{QUEUE}/1/stream", headers={"Authorization": f"Bearer {short}"}, timeout=30)
    blocks = response.text.strip().split("\n\n")
    assert blocks[0].startswith("event: position")
    assert blocks[-1] == 'event: end\ndata: {"reason": "token_expired"}'
