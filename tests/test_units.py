"""Pure parts: the trust gate, formatting, the redactor, the ledger, message shaping."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dispatch_matrix.agent.tables import EngineSessions
from dispatch_matrix.agent.transcript import (
    STOPPED_RESULT,
    error_result,
    normalize,
    well_formed,
    with_cache_breakpoint,
)
from dispatch_matrix.core.backoff import Backoff
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.core.logs import REDACTED, Redactor
from dispatch_matrix.identity.gate import (
    DeviceTrust,
    UserKeys,
    device_trust,
    may_command,
    may_join,
)
from dispatch_matrix.identity.signing import CrossSigningKeys, SigningKey, signable, verify
from dispatch_matrix.identity.tables import IdentityTables
from dispatch_matrix.matrix.inbound import Invite, Message, Reaction
from dispatch_matrix.matrix.outbox import as_reply, text_content
from dispatch_matrix.matrix.privacy import Change, outsiders, privacy_change
from dispatch_matrix.store import Connection, Database, Task, TaskState
from dispatch_matrix.voice.tables import VoiceMessages, VoiceState

OWNERS = frozenset({"@me:example.org"})


def message(sender: str = "@me:example.org", encrypted: bool = True) -> Message:
    return Message(
        RoomID("!r:example.org"), EventID("$e"), UserID(sender), "hi", 1, encrypted, None
    )


def reaction(sender: str = "@me:example.org", encrypted: bool = True) -> Reaction:
    return Reaction(
        RoomID("!r:example.org"),
        EventID("$r"),
        UserID(sender),
        EventID("$q"),
        "✅",
        encrypted,
        None,
    )


SIGNED = DeviceTrust.CROSS_SIGNED


@pytest.mark.parametrize(
    ("item", "device", "private", "relaxed", "reason"),
    [
        (message(), SIGNED, True, False, ""),
        (message(encrypted=False), None, True, False, "plaintext"),
        (message(sender="@stranger:example.org"), SIGNED, True, False, "not an owner"),
        (message(sender="@stranger:example.org", encrypted=False), None, True, False, "owner"),
        (message(), DeviceTrust.UNSIGNED, True, False, "not cross-signed"),
        (message(), DeviceTrust.NO_IDENTITY, True, False, "no cross-signing identity"),
        (message(), DeviceTrust.UNKNOWN_DEVICE, True, False, "not in the sender's device list"),
        (message(), DeviceTrust.IDENTITY_CHANGED, True, False, "identity changed"),
        (message(), SIGNED, False, False, "not private"),
        (message(), None, True, False, "device unknown"),
        # The relaxed setting forgives a missing cross-signature, never the rest.
        (message(), DeviceTrust.UNSIGNED, True, True, ""),
        (message(), DeviceTrust.IDENTITY_CHANGED, True, True, "identity changed"),
        (message(encrypted=False), None, True, True, "plaintext"),
        (message(), SIGNED, False, True, "not private"),
        # A reaction (an approval's ✅) passes the same gate as a message.
        (reaction(), SIGNED, True, False, ""),
        (reaction(encrypted=False), None, True, False, "plaintext"),
        (reaction("@thief:example.org"), SIGNED, True, False, "not an owner"),
        (reaction(), DeviceTrust.UNSIGNED, True, False, "not cross-signed"),
        (reaction(), SIGNED, False, False, "not private"),
    ],
)
def test_may_command(
    item: Message | Reaction, device: DeviceTrust | None, private: bool, relaxed: bool, reason: str
) -> None:
    verdict = may_command(item, OWNERS, device, private, require_cross_signed=not relaxed)
    assert verdict.allowed is (reason == "")
    assert reason in verdict.reason


def _identity(user: str = "@me:example.org") -> tuple[CrossSigningKeys, dict[str, Any]]:
    """Cross-signing keys and a device signed by them, built like a client would."""
    keys = CrossSigningKeys.generate()
    device = {
        "user_id": user,
        "device_id": "PHONE",
        "algorithms": ["m.megolm.v1.aes-sha2"],
        "keys": {"curve25519:PHONE": "curvekey", "ed25519:PHONE": "edkey"},
    }
    return keys, keys.self_signing.sign(device, user)


def _user_keys(keys: CrossSigningKeys, devices: dict[str, Any]) -> UserKeys:
    body = keys.upload_body("@me:example.org")
    return UserKeys("@me:example.org", body["master_key"], body["self_signing_key"], devices)


def test_device_trust_walks_master_to_self_signing_to_device() -> None:
    keys, device = _identity()
    user = _user_keys(keys, {"PHONE": device})
    assert device_trust(user, "PHONE", keys.master.public) is DeviceTrust.CROSS_SIGNED
    assert user.device_by_curve_key("curvekey") == "PHONE"


def test_device_trust_catches_each_broken_link() -> None:
    keys, device = _identity()
    other, _ = _identity()
    unsigned = {k: v for k, v in device.items() if k != "signatures"}
    assert device_trust(_user_keys(keys, {"PHONE": unsigned}), "PHONE", None) is (
        DeviceTrust.UNSIGNED
    )
    assert device_trust(_user_keys(keys, {"PHONE": device}), "PHONE", other.master.public) is (
        DeviceTrust.IDENTITY_CHANGED
    )
    assert device_trust(_user_keys(keys, {"PHONE": device}), "LAPTOP", None) is (
        DeviceTrust.UNKNOWN_DEVICE
    )
    # A self-signing key the master did not sign breaks the chain.
    forged = _user_keys(keys, {"PHONE": device})
    forged = UserKeys(
        forged.user_id,
        forged.master,
        other.upload_body("@me:example.org")["self_signing_key"],
        forged.devices,
    )
    assert device_trust(forged, "PHONE", None) is DeviceTrust.UNSIGNED
    assert device_trust(UserKeys("@me:example.org", None, None, {}), "PHONE", None) is (
        DeviceTrust.NO_IDENTITY
    )
    tampered = {**device, "keys": {**device["keys"], "curve25519:PHONE": "swapped"}}
    assert device_trust(_user_keys(keys, {"PHONE": tampered}), "PHONE", None) is (
        DeviceTrust.UNSIGNED
    )


def test_signature_round_trip_matches_the_spec_canonical_form() -> None:
    key = SigningKey.generate()
    signed = key.sign({"b": 1, "a": "é", "unsigned": {"x": 1}}, "@u:x")
    assert verify(signed, "@u:x", key.key_id, key.public)
    assert not verify({**signed, "a": "e"}, "@u:x", key.key_id, key.public)
    assert signable(signed) == '{"a":"é","b":1}'.encode()


def test_cross_signing_keys_are_saved_with_their_public_halves(tmp_path: Path) -> None:
    keys = CrossSigningKeys.generate()
    path = tmp_path / "cross-signing.json"
    keys.save(path)
    loaded = CrossSigningKeys.load(path)
    assert loaded is not None and loaded.publics_saved
    assert loaded.master.public == keys.master.public
    # A file from before the public halves were saved: derived from the seeds, the same keys.
    data = json.loads(path.read_text())
    del data["public"]
    path.write_text(json.dumps(data))
    old = CrossSigningKeys.load(path)
    assert old is not None and not old.publics_saved
    assert old.upload_body("@u:x") == keys.upload_body("@u:x")


@pytest.mark.parametrize(
    ("key", "signature"),
    [("AAAA", None), (None, "!!!"), (None, "AAAA"), ("not base64 at all", None), (None, "")],
)
def test_verify_refuses_malformed_keys_and_signatures(
    key: str | None, signature: str | None
) -> None:
    signer = SigningKey.generate()
    signed = signer.sign({"a": 1}, "@u:x")
    if signature is not None:
        signed["signatures"]["@u:x"][signer.key_id] = signature
    assert not verify(signed, "@u:x", signer.key_id, key if key is not None else signer.public)


@pytest.mark.parametrize(
    ("inviter", "allowed"), [("@me:example.org", True), ("@stranger:example.org", False)]
)
def test_may_join_only_an_owners_invite(inviter: str, allowed: bool) -> None:
    assert may_join(Invite(RoomID("!r:x"), UserID(inviter)), OWNERS).allowed is allowed


def test_markdown_becomes_html_and_body_keeps_the_text() -> None:
    content = text_content("**done**: 3 tests\n\n- a\n- b")
    assert content["body"] == "**done**: 3 tests\n\n- a\n- b"
    assert content["format"] == "org.matrix.custom.html"
    assert "<strong>done</strong>" in content["formatted_body"]
    assert "<li>a</li>" in content["formatted_body"]


def test_plain_text_has_no_html_and_raw_html_is_escaped() -> None:
    assert "formatted_body" not in text_content("just words")
    content = text_content("<img src=x onerror=alert(1)> *hi*")
    assert "<img" not in content["formatted_body"]
    assert "&lt;img" in content["formatted_body"]


def test_reply_relation() -> None:
    content = as_reply(text_content("ok"), "$abc")
    assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": "$abc"}}


def test_redactor_scrubs_known_values_keys_and_shapes() -> None:
    redactor = Redactor()
    redactor.add("my-bot-password")
    event = {
        "event": "login with my-bot-password",
        "password": "anything",
        "access_token": "syt_abc",
        "note": "key sk-ant-api03-abcdefghijklmnop and syt_Ym90_AbCdEfGh_123abc",
        "nested": {"api_key": "x" * 10, "ok": "fine"},
    }
    out = redactor(None, "info", event)
    text = json.dumps(out)
    for secret in ("my-bot-password", "anything", "syt_abc", "sk-ant-api03", "syt_Ym90"):
        assert secret not in text
    assert out["nested"]["ok"] == "fine"
    assert REDACTED in out["event"]


def test_ledger_deduplicates_event_ids_and_keeps_order(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    first = db.add_task("$1", "!r", "@me", "one", 1)
    assert first is not None
    assert db.add_task("$1", "!r", "@me", "one again", 1) is None
    db.add_task("$2", "!r", "@me", "two", 2)
    assert [t.body for t in db.tasks_in(TaskState.QUEUED)] == ["one", "two"]
    db.set_task_state(first.id, TaskState.DONE, result="ok")
    assert db.next_task().body == "two"  # type: ignore[union-attr]
    done = db.task(first.id)
    assert done is not None and done.finished_at is not None and done.result == "ok"
    assert (tmp_path / "d.db").stat().st_mode & 0o077 == 0


def test_outbox_key_fixes_the_transaction_id(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    one = db.enqueue_outgoing("!r", "m.room.message", {"body": "a"}, key="t1.answer")
    again = db.enqueue_outgoing("!r", "m.room.message", {"body": "a"}, key="t1.answer")
    assert one.txn_id == again.txn_id
    db.mark_sent(one.txn_id, "$sent")
    third = db.enqueue_outgoing("!r", "m.room.message", {"body": "a"}, key="t1.answer")
    assert third.event_id == "$sent"
    assert db.unsent() == []


def test_a_transaction_inside_another_commits_with_it_and_fails_alone(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    with db.tx():
        task = db.add_task("$1", "!r", "@me", "one", 1)
        assert task is not None
        with pytest.raises(ZeroDivisionError), db.tx():
            db.add_task("$2", "!r", "@me", "two", 2)
            raise ZeroDivisionError
        db.enqueue_outgoing("!r", "m.room.message", {"body": "a"}, task.id, key="t1.done")
        db.set_task_state(task.id, TaskState.DONE)
    # The inner failure undid only its own row; the rest was committed once, together.
    again = Database.open(tmp_path / "d.db")
    assert [t.body for t in again.tasks_in(TaskState.DONE)] == ["one"]
    assert again.task_by_event("$2") is None
    assert len(again.unsent()) == 1


def test_an_answer_recorded_with_its_task_state_is_all_or_nothing(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    task = db.add_task("$1", "!r", "@me", "one", 1)
    assert task is not None
    with pytest.raises(sqlite3.IntegrityError), db.tx():
        db.enqueue_outgoing("!r", "m.room.message", {"body": "a"}, task.id, key="t1.done")
        db.set_task_state(task.id, TaskState.DONE)
        db._conn.execute("INSERT INTO tasks (id) VALUES (NULL)")  # fails: NOT NULL columns
    assert db.unsent() == []
    after = db.task(task.id)
    assert after is not None and after.state is TaskState.QUEUED


def test_a_feature_table_writes_in_the_transaction_it_is_called_in(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    voices, pins = VoiceMessages(db), IdentityTables(db)
    with pytest.raises(ZeroDivisionError), db.tx():
        db.add_task("$1", "!r", "@me", "one", 1)
        voices.add_voice(EventID("$v"), RoomID("!r"), UserID("@me"), 1, {})
        pins.pin_identity("@me", "MASTER", how="first contact")
        raise ZeroDivisionError
    # One transaction, whoever's tables: the failure undid the ledger's row and the features'.
    assert db.task_by_event("$1") is None and voices.voice("$v") is None
    assert pins.pinned_identity("@me") is None
    with db.tx():
        voices.add_voice(EventID("$v"), RoomID("!r"), UserID("@me"), 1, {})
        assert voices.voice("$v") is not None, "a read inside the transaction sees its writes"
    db.close()


def test_the_connection_alone_migrates_the_whole_schema_for_feature_tables(
    tmp_path: Path,
) -> None:
    # The one migration sequence holds every feature's tables: a bare Connection (not the
    # Database with the base layers' queries) is all a feature table needs.
    conn = Connection.open(tmp_path / "d.db")
    voices = VoiceMessages(conn)
    voices.add_voice(EventID("$v"), RoomID("!r"), UserID("@me"), 1, {"msgtype": "m.audio"})
    pending = voices.next_pending_voice()
    assert pending is not None and pending.state is VoiceState.PENDING
    assert EngineSessions(conn).engine_session(1) is None
    conn.close()
    db = Database.open(tmp_path / "d.db")
    assert VoiceMessages(db).voice("$v") == pending
    db.close()


def test_normalize_merges_same_role_neighbours() -> None:
    text = [{"type": "text", "text": "x"}]
    messages = [
        {"role": "assistant", "content": text},
        {"role": "user", "content": text},
        {"role": "user", "content": text},
        {"role": "assistant", "content": text},
    ]
    out = normalize(messages)
    assert [m["role"] for m in out] == ["user", "assistant"]
    assert len(out[0]["content"]) == 2


def test_cache_breakpoint_goes_on_the_last_block_of_a_copy() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "x"}]}]
    out = with_cache_breakpoint(messages)
    assert out[-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in messages[-1]["content"][-1]


def test_normalize_answers_tool_calls_a_cancelled_task_left_open() -> None:
    call = {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "sleep 9"}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "wait"}]},
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [{"type": "text", "text": "next task"}]},
    ]
    out = normalize(messages)
    first = out[2]["content"][0]
    assert first["type"] == "tool_result" and first["tool_use_id"] == "toolu_1"
    assert first["is_error"] is True
    assert out[2]["content"][1]["text"] == "next task"


def test_backoff_doubles_to_its_cap_and_starts_over_after_a_success() -> None:
    backoff = Backoff(1.0, 5.0)
    assert not backoff.failing
    assert [backoff.next() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.failing
    backoff.reset()
    assert not backoff.failing and backoff.next() == 1.0


@pytest.mark.parametrize(
    ("was", "now", "expected"),
    [
        (None, True, Change.NONE),  # first seen: remembered, not announced
        (None, False, Change.NONE),
        (True, True, Change.NONE),
        (False, False, Change.NONE),
        (True, False, Change.OPENED),
        (False, True, Change.CLOSED),
    ],
)
def test_privacy_change(was: bool | None, now: bool, expected: Change) -> None:
    assert privacy_change(was, now) is expected


def test_outsiders_are_members_who_are_neither_the_bot_nor_an_owner() -> None:
    members = ["@bot:x", "@me:example.org", "@eve:y", "@adam:z"]
    assert outsiders(members, OWNERS, "@bot:x") == ["@adam:z", "@eve:y"]
    assert outsiders(["@bot:x", "@me:example.org"], OWNERS, "@bot:x") == []


def test_transcript_rows_read_again_include_what_was_added_since(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    conversation = db.current_conversation()
    text = [{"type": "text", "text": "one"}]
    db.append_message(conversation, None, "user", text)
    first = db.transcript_rows(conversation)
    db.append_message(conversation, None, "assistant", [{"type": "text", "text": "two"}])
    with pytest.raises(ZeroDivisionError), db.tx():
        db.append_message(conversation, None, "user", [{"type": "text", "text": "undone"}])
        assert len(db.transcript_rows(conversation)) == 3
        raise ZeroDivisionError
    rows = db.transcript_rows(conversation)
    assert [r.content[0]["text"] for r in rows] == ["one", "two"]
    assert db.transcript_rows(conversation, after_id=first[0].id) == rows[1:]
    assert db.transcript_rows(conversation, after_id=rows[-1].id + 5) == []
    db.append_message(conversation, None, "user", [{"type": "text", "text": "three"}])
    fresh = Database.open(tmp_path / "d.db").transcript_rows(conversation)
    assert db.transcript_rows(conversation) == fresh


def test_transcript_rows_a_summary_stands_for_are_let_go(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    conversation = db.current_conversation()
    for n in range(6):
        db.append_message(conversation, None, "user", [{"type": "text", "text": f"m{n}"}])
    rows = db.transcript_rows(conversation)
    assert len(db._rows[conversation][1]) == 6
    # The engine reads from the latest summary's end: only what follows it stays in memory.
    after = db.transcript_rows(conversation, after_id=rows[3].id)
    assert after == rows[4:]
    assert db._rows[conversation] == (rows[3].id, rows[4:])
    db.append_message(conversation, None, "user", [{"type": "text", "text": "m6"}])
    newer = db.transcript_rows(conversation, after_id=rows[3].id)
    assert [r.content[0]["text"] for r in newer] == ["m4", "m5", "m6"]
    assert len(db._rows[conversation][1]) == 3
    # A read from further back still sees everything, from the disk.
    assert [r.content[0]["text"] for r in db.transcript_rows(conversation)] == [
        f"m{n}" for n in range(7)
    ]
    assert len(db._rows[conversation][1]) == 3


def _call(call_id: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": "bash", "input": {"command": "sleep 9"}}


def _result(call_id: str, said: str = "ok") -> dict[str, Any]:
    return {
        "type": "tool_result",
        "tool_use_id": call_id,
        "content": [{"type": "text", "text": said}],
    }


def _text(said: str) -> dict[str, Any]:
    return {"type": "text", "text": said}


def _user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def _assistant(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": list(blocks)}


@pytest.mark.parametrize(
    ("messages", "expected", "answered", "dropped"),
    [
        # Well formed: unchanged, nothing to report.
        (
            [_user(_text("go")), _assistant(_call("a")), _user(_result("a"))],
            [_user(_text("go")), _assistant(_call("a")), _user(_result("a"))],
            (),
            (),
        ),
        # What `!retry` of a cancelled task wrote (issue 28): a second result after a later
        # turn. The stale one goes; the message left empty goes; the replies merge.
        (
            [
                _user(_text("run it")),
                _assistant(_call("a")),
                _user(_result("a", "cancelled"), _text("anything")),
                _assistant(_text("echo: anything")),
                _user(_result("a", "interrupted")),
                _assistant(_text("done again")),
            ],
            [
                _user(_text("run it")),
                _assistant(_call("a")),
                _user(_result("a", "cancelled"), _text("anything")),
                _assistant(_text("echo: anything"), _text("done again")),
            ],
            (),
            ("a",),
        ),
        # Two results for one call in one message: the first stands.
        (
            [
                _user(_text("go")),
                _assistant(_call("a")),
                _user(_result("a", "1"), _result("a", "2")),
            ],
            [_user(_text("go")), _assistant(_call("a")), _user(_result("a", "1"))],
            (),
            ("a",),
        ),
        # A result with no call anywhere (the first message after a compaction, say).
        (
            [_user(_result("z"), _text("hello"))],
            [_user(_text("hello"))],
            (),
            ("z",),
        ),
        # A call left open by the last reply of a request is answered too.
        (
            [_user(_text("go")), _assistant(_text("on it"), _call("a"))],
            [
                _user(_text("go")),
                _assistant(_text("on it"), _call("a")),
                _user(error_result("a", STOPPED_RESULT)),
            ],
            ("a",),
            (),
        ),
        # Results go in front of the text, in the order of the calls.
        (
            [
                _user(_text("go")),
                _assistant(_call("a"), _call("b")),
                _user(_text("and"), _result("b"), _result("a")),
            ],
            [
                _user(_text("go")),
                _assistant(_call("a"), _call("b")),
                _user(_result("a"), _result("b"), _text("and")),
            ],
            (),
            (),
        ),
    ],
)
def test_well_formed_keeps_one_result_per_call_in_the_next_message(
    messages: list[dict[str, Any]],
    expected: list[dict[str, Any]],
    answered: tuple[str, ...],
    dropped: tuple[str, ...],
) -> None:
    out, repair = well_formed(messages)
    assert out == expected
    assert (repair.answered, repair.dropped) == (answered, dropped)
    assert bool(repair) == (out != messages)


@pytest.mark.parametrize(
    ("body", "width", "title"),
    [
        ("fix the build", 60, "fix the build"),
        ("  first line\nsecond line", 60, "first line"),
        ("a" * 61, 60, "a" * 59 + "…"),
        ("a" * 60, 60, "a" * 60),
        ("word " * 20, 40, ("word " * 8)[:39] + "…"),
        ("   \n  ", 60, ""),
    ],
)
def test_a_task_is_named_by_its_first_line_shortened(body: str, width: int, title: str) -> None:
    task = Task(
        1, EventID("$e"), RoomID("!r"), UserID("@o"), body, TaskState.QUEUED, 1, 0.0, None,
        None, None, None,
    )  # fmt: skip
    assert task.title(width) == title
