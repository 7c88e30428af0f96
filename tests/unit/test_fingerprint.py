"""The idempotency fingerprint (app/services/idempotency.py): layout-independent for JSON, bytes otherwise."""

from __future__ import annotations

from app.services.idempotency import request_fingerprint as fingerprint


def test_the_same_json_in_any_layout_has_one_fingerprint() -> None:
    compact = b'{"event_id":1,"quantity":2,"notes":{"a":[1,2]}}'
    spread = b'{\n  "notes": {"a": [1, 2]},\n  "quantity": 2,\n  "event_id": 1\n}'
    assert fingerprint("POST", "/b", compact) == fingerprint("POST", "/b", spread)


def test_any_change_of_value_method_or_path_changes_it() -> None:
    body = b'{"event_id": 1, "quantity": 2}'
    base = fingerprint("POST", "/b", body)
    assert base != fingerprint("POST", "/b", b'{"event_id": 1, "quantity": 3}')
    assert base != fingerprint("POST", "/b", b'{"event_id": 1, "quantity": [2]}')
    assert base != fingerprint("PUT", "/b", body)
    assert base != fingerprint("POST", "/c", body)


def test_a_body_that_is_not_json_is_taken_byte_for_byte() -> None:
    assert fingerprint("POST", "/b", b"a=1&b=2") != fingerprint("POST", "/b", b"b=2&a=1")
    assert fingerprint("POST", "/b", b"a=1 ") != fingerprint("POST", "/b", b"a=1")
    assert fingerprint("POST", "/b", b"\xff") == fingerprint("POST", "/b", b"\xff")


def test_an_empty_body_counts_as_json_null() -> None:
    # Both mean "no document": the canonical form of an empty body is JSON null.
    assert fingerprint("POST", "/b", b"") == fingerprint("POST", "/b", b"null")
