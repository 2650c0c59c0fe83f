"""Reliability checklist (docs: reliability-checklist.md §6), in process with ``WebsocketCommunicator``.

Every test names the checklist row it covers. Each one completes the JSON handshake, provokes the
row's scenario and asserts the exact protocol answer; a second, healthy connection shows that a
misbehaving client affects nobody else.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from signalr_groups.hubs.hub import Hub
from signalr_groups.lifetime.managers import get_manager
from tests.communicator import HANDSHAKE, RS, FakeUser, HubClient
from tests.hubs import InteropHub, OtherHub

CLOSED = "Connection closed with an error. "
MAX = 32 * 1024


def hub_settings(**overrides: Any) -> override_settings:
    """``override_settings`` for SIGNALR_GROUPS, keeping the test settings' USER_ID_PROVIDER."""
    return override_settings(SIGNALR_GROUPS={**settings.SIGNALR_GROUPS, **overrides})


def invocation(invocation_id: str | None, target: str, *arguments: Any) -> str:
    message: dict[str, Any] = {"type": 1, "target": target, "arguments": list(arguments)}
    if invocation_id is not None:
        message["invocationId"] = invocation_id
    return json.dumps(message) + RS


def completion(invocation_id: str, result: Any) -> dict[str, Any]:
    return {"type": 3, "invocationId": invocation_id, "result": result}


def failure(invocation_id: str, error: str) -> dict[str, Any]:
    return {"type": 3, "invocationId": invocation_id, "error": error}


def group_message(message: str) -> dict[str, Any]:
    return {"type": 1, "target": "Receive", "arguments": ["group", message]}


@pytest.fixture
async def clients() -> AsyncIterator[list[HubClient]]:
    """Tracks every client a test opens and disconnects all of them at the end."""
    opened: list[HubClient] = []
    yield opened
    for client in opened:
        await client.disconnect()


@pytest.fixture
def new_client(clients):
    """``await new_client(hub=..., user=..., handshake=True)``: a client that is disconnected after the test."""

    async def make(hub: type[Hub] = InteropHub, user: Any = None, handshake: bool = True) -> HubClient:
        client = HubClient(hub, "/" + hub.hub_key(), user=user)
        clients.append(client)
        if handshake:
            await client.connect()
        else:
            await client.open()
        return client

    return make


# --------------------------------------------------------------------------- row 1


async def test_row1_malformed_json_closes_only_that_connection(new_client):
    """Row 1: ``{"type":1,`` + RS → Close msg with the parser error, WS close 1000; others unaffected."""
    healthy = await new_client()
    bad = await new_client()
    await bad.send_text('{"type":1,' + RS)
    await bad.assert_closed(
        CLOSED + "ProtocolError: Error reading JSON: "
        "Expecting property name enclosed in double quotes: line 1 column 11 (char 10)"
    )
    await healthy.assert_echo()
    await healthy.assert_nothing()


async def test_row1_malformed_record_after_good_ones_in_the_same_frame(new_client):
    """Row 1: records before the malformed one are answered first, then the Close message."""
    client = await new_client()
    await client.send_text(invocation("1", "Echo", "one") + invocation("2", "Echo", "two") + "{]" + RS)
    assert await client.receive_records(3) == [
        completion("1", "one"),
        completion("2", "two"),
        {
            "type": 7,
            "error": CLOSED + "ProtocolError: Error reading JSON: "
            "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
            "allowReconnect": True,
        },
    ]
    await client.assert_closed()


# --------------------------------------------------------------------------- row 2


async def test_row2_nothing_happens_until_the_record_separator(new_client):
    """Row 2: a record without 0x1E is held; the separator in a later frame releases it."""
    client = await new_client()
    await client.send_text(invocation("1", "Echo", "held")[:-1])
    await client.assert_nothing()
    await client.send_text(RS)
    assert await client.receive_record() == completion("1", "held")


async def test_row2_ping_without_separator_is_held(new_client):
    """Row 2: ``{"type":6}`` without RS, then an invocation: the two only parse together once RS arrives."""
    client = await new_client()
    await client.send_text('{"type":6}')
    await client.assert_nothing()
    # Completing the ping and sending an invocation in the same frame shows the ping parsed on its own.
    await client.send_text(RS + invocation("1", "Echo", "after ping"))
    assert await client.receive_record() == completion("1", "after ping")
    await client.assert_nothing()


async def test_row2_record_split_across_many_frames(new_client):
    """Row 2: one record in one-character frames, then two records in one frame: answered in order."""
    client = await new_client()
    for char in invocation("1", "Add", 2, 3):
        await client.send_text(char)
    assert await client.receive_record() == completion("1", 5)
    await client.send_text(invocation("2", "Echo", "a") + invocation("3", "Echo", "b"))
    assert await client.receive_records(2) == [completion("2", "a"), completion("3", "b")]
    # A frame that ends one record and starts the next.
    first, second = invocation("4", "Echo", "c"), invocation("5", "Echo", "d")
    await client.send_text(first[:10])
    await client.send_text(first[10:] + second[:7])
    assert await client.receive_record() == completion("4", "c")
    await client.assert_nothing()
    await client.send_text(second[7:])
    assert await client.receive_record() == completion("5", "d")


async def test_row2_records_right_after_the_handshake_in_the_same_frame(new_client):
    """Row 2: the handshake and two invocations in one frame: handshake response, then both completions."""
    client = await new_client(handshake=False)
    await client.send_text(HANDSHAKE + invocation("1", "Echo", "x") + invocation("2", "Echo", "y"))
    assert await client.receive_records(3) == [{}, completion("1", "x"), completion("2", "y")]


# --------------------------------------------------------------------------- row 3


async def test_row3_unknown_type_is_ignored(new_client):
    """Row 3: type 99 is ignored (future protocol versions); the connection stays open."""
    client = await new_client()
    await client.send_text('{"type":99}' + RS + '{"type":99,"target":"Echo","invocationId":"x","arguments":[]}' + RS)
    await client.assert_nothing()
    await client.send_text('{"type":99}' + RS + invocation("1", "Echo", "after 99"))
    assert await client.receive_record() == completion("1", "after 99")


@pytest.mark.parametrize(
    ("record", "error"),
    [
        pytest.param("{}", "Missing required property 'type'.", id="missing"),
        pytest.param('{"target":"Echo","arguments":["x"]}', "Missing required property 'type'.", id="missing-inv"),
        pytest.param('{"type":null}', "Missing required property 'type'.", id="null"),
        pytest.param('{"type":"1","target":"Echo","arguments":[]}', "Property 'type' must be an integer.", id="str"),
        pytest.param('{"type":true}', "Property 'type' must be an integer.", id="bool"),
        pytest.param('{"type":6.5}', "Property 'type' must be an integer.", id="float"),
        pytest.param("[6]", "A hub message must be a JSON object.", id="not-object"),
    ],
)
async def test_row3_missing_or_wrong_typed_type_closes(new_client, record, error):
    """Row 3: a missing or non-integer ``type`` → Close msg; other connections unaffected."""
    healthy = await new_client()
    bad = await new_client()
    await bad.send_text(record + RS)
    await bad.assert_closed(CLOSED + "ProtocolError: " + error)
    await healthy.assert_echo()


# --------------------------------------------------------------------------- row 4


@pytest.mark.parametrize(
    ("target", "arguments", "detail"),
    [
        pytest.param("Add", [1], "Invocation provides 1 argument(s) but target expects 2.", id="too-few"),
        pytest.param("Add", [1, 2, 3], "Invocation provides 3 argument(s) but target expects 2.", id="too-many"),
        pytest.param("Echo", [], "Invocation provides 0 argument(s) but target expects 1.", id="none"),
        pytest.param("Add", ["1", 2], "Argument 0 has the wrong type (str).", id="str-for-int"),
        pytest.param("Add", [1, True], "Argument 1 has the wrong type (bool).", id="bool-for-int"),
        pytest.param("Add", [1, 2.5], "Argument 1 has the wrong type (float).", id="float-for-int"),
        pytest.param("Fail", [None], "Argument 0 has the wrong type (NoneType).", id="null-for-str"),
    ],
)
@pytest.mark.parametrize("detailed", [False, True], ids=["generic", "detailed"])
async def test_row4_wrong_arguments(new_client, target, arguments, detail, detailed):
    """Row 4: wrong argument count/types → "Failed to invoke 'X'…" (detail only with DETAILED_ERRORS)."""
    with hub_settings(DETAILED_ERRORS=detailed):
        client = await new_client()
        expected = f"Failed to invoke '{target}' due to an error on the server."
        if detailed:
            expected += f" InvalidDataException: {detail}"
        assert await client.invoke_record(target, *arguments) == failure("i1", expected)
        await client.assert_echo()


async def test_row4_wrong_arguments_without_invocation_id_get_no_reply(new_client):
    """Row 4: a non-blocking invocation with bad arguments gets nothing back; the connection stays open."""
    client = await new_client()
    await client.send("Add", 1)
    await client.send("Add", "a", "b")
    await client.send("Echo")
    await client.assert_nothing()
    await client.assert_echo()


@pytest.mark.parametrize("detailed", [False, True], ids=["generic", "detailed"])
async def test_row4_hub_error_message_reaches_the_caller(new_client, detailed):
    """Row 4 (hub errors): HubError → "…invoking 'Fail' on the server. HubException: <msg>", in both modes."""
    with hub_settings(DETAILED_ERRORS=detailed):
        client = await new_client()
        assert await client.invoke_record("Fail", "no such room") == failure(
            "i1", "An unexpected error occurred invoking 'Fail' on the server. HubException: no such room"
        )
        await client.assert_echo()


async def test_row4_other_exceptions_are_generic(new_client):
    """Row 4 (hub errors): any other exception → generic text, no internal detail (EnableDetailedErrors off)."""
    client = await new_client()
    assert await client.invoke_record("Crash") == failure(
        "i1", "An unexpected error occurred invoking 'Crash' on the server."
    )
    await client.assert_echo()


async def test_row4_other_exceptions_detailed(new_client):
    """Row 4 (hub errors): with DETAILED_ERRORS=True the exception type and message are included."""
    with hub_settings(DETAILED_ERRORS=True):
        client = await new_client()
        assert await client.invoke_record("Crash") == failure(
            "i1", "An unexpected error occurred invoking 'Crash' on the server. RuntimeError: secret internal detail"
        )
        await client.assert_echo()


async def test_row4_hub_method_errors_without_invocation_id_get_no_reply(new_client):
    """Row 4: Fail/Crash invoked without an invocationId send nothing back."""
    client = await new_client()
    await client.send("Fail", "x")
    await client.send("Crash")
    await client.assert_nothing()
    await client.assert_echo()


# --------------------------------------------------------------------------- row 5


@pytest.mark.parametrize("target", ["NoSuchMethod", "NotExposed", "not_exposed", "__init__", "Dispatch", "x" * 200])
async def test_row5_unknown_method_with_invocation_id(new_client, target):
    """Row 5: unknown (or not exposed) method → "Unknown hub method 'X'" Completion; connection stays open."""
    client = await new_client()
    assert await client.invoke_record(target) == failure("i1", f"Unknown hub method '{target}'")
    await client.assert_echo()


async def test_row5_unknown_method_without_invocation_id_gets_no_reply(new_client):
    """Row 5: an unknown method without invocationId gets no reply at all."""
    client = await new_client()
    await client.send("NoSuchMethod", 1, 2)
    await client.assert_nothing()
    await client.assert_echo()


async def test_row5_method_names_match_case_insensitively(new_client):
    """Row 5 (contrast): a known method in another case is not unknown."""
    client = await new_client()
    assert await client.invoke("echo", 1) == 1
    assert await client.invoke("ADD", 1, 2) == 3
    assert await client.invoke("renamed") == "renamed"


@pytest.mark.parametrize(
    ("record", "error"),
    [
        pytest.param('{"type":1,"target":5,"arguments":[]}', "Property 'target' has the wrong type.", id="int"),
        pytest.param(
            '{"type":1,"invocationId":"1","target":["Echo"],"arguments":[]}',
            "Property 'target' has the wrong type.",
            id="list",
        ),
        pytest.param('{"type":1,"target":null,"arguments":[]}', "Missing required property 'target'.", id="null"),
        pytest.param('{"type":1,"invocationId":"1","arguments":[]}', "Missing required property 'target'.", id="none"),
        pytest.param(
            '{"type":1,"invocationId":"1","target":"Echo","arguments":"x"}',
            "Property 'arguments' has the wrong type.",
            id="arguments-str",
        ),
    ],
)
async def test_row5_target_not_a_string_closes(new_client, record, error):
    """Row 5: a ``target`` that is not a string → Close msg."""
    client = await new_client()
    await client.send_text(record + RS)
    await client.assert_closed(CLOSED + "ProtocolError: " + error)


# --------------------------------------------------------------------------- row 6

TOO_LARGE = CLOSED + "MessageTooLargeError: The maximum message size of 32768B was exceeded."


def padded_echo(invocation_id: str, size: int) -> tuple[str, str]:
    """An Echo record (without RS) of exactly ``size`` UTF-8 bytes, and the echoed string."""
    empty = invocation(invocation_id, "Echo", "")[:-1]
    padding = "p" * (size - len(empty.encode()))
    record = invocation(invocation_id, "Echo", padding)[:-1]
    assert len(record.encode()) == size
    return record, padding


async def test_row6_record_of_exactly_the_limit_is_accepted(new_client):
    """Row 6 (boundary): a 32 KB record is answered."""
    client = await new_client()
    record, padding = padded_echo("1", MAX)
    await client.send_text(record + RS)
    assert await client.receive_record() == completion("1", padding)


async def test_row6_three_records_in_one_frame_third_over_the_limit(new_client):
    """Row 6: port of ManyHubMessagesOneOverTheMaxMessageSizeThrows: two answers, then the Close msg."""
    healthy = await new_client()
    client = await new_client()
    oversized, _ = padded_echo("3", MAX + 1)
    await client.send_text(invocation("1", "Echo", "one") + invocation("2", "Echo", "two") + oversized + RS)
    assert await client.receive_records(2) == [completion("1", "one"), completion("2", "two")]
    await client.assert_closed(TOO_LARGE)
    await healthy.assert_echo()


async def test_row6_oversized_record_in_the_handshake_frame(new_client):
    """Row 6: handshake, an Echo and an oversized record in one frame: {} and the answer, then the Close msg."""
    client = await new_client(handshake=False)
    oversized, _ = padded_echo("2", MAX + 1)
    await client.send_text(HANDSHAKE + invocation("1", "Echo", "one") + oversized + RS)
    assert await client.receive_records(2) == [{}, completion("1", "one")]
    await client.assert_closed(TOO_LARGE)


async def test_row6_multibyte_record_over_the_limit(new_client):
    """Row 6: the limit counts UTF-8 bytes: 11 000 three-byte characters (33 000 bytes) are too many."""
    client = await new_client()
    await client.send_text(invocation("1", "Echo", "€" * 11_000).replace("\\u20ac", "€"))
    await client.assert_closed(TOO_LARGE)


async def test_row6_40kb_without_separator(new_client):
    """Row 6: a 40 KB chunk with no RS → Close msg (nothing is buffered past the limit)."""
    healthy = await new_client()
    client = await new_client()
    await client.send_text('{"type":1,"target":"Echo","arguments":["' + "x" * (40 * 1024))
    await client.assert_closed(TOO_LARGE)
    await healthy.assert_echo()


async def test_row6_chunked_record_over_the_limit(new_client):
    """Row 6: port of ChunkedHubMessageOverTheMaxMessageSizeThrows: 8 KB chunks, no RS, closed once past 32 KB."""
    client = await new_client()
    chunk = "x" * (8 * 1024)
    for _ in range(4):
        await client.send_text(chunk)
    await client.assert_nothing()
    await client.send_text("x")
    await client.assert_closed(TOO_LARGE)


async def test_row6_limit_follows_the_setting(new_client):
    """Row 6: MAX_MESSAGE_SIZE is honoured: with 100 bytes, a 101-byte record closes the connection."""
    with hub_settings(MAX_MESSAGE_SIZE=100):
        client = await new_client()
        record, padding = padded_echo("1", 100)
        await client.send_text(record + RS)
        assert await client.receive_record() == completion("1", padding)
        record, _ = padded_echo("2", 101)
        await client.send_text(record + RS)
        await client.assert_closed(CLOSED + "MessageTooLargeError: The maximum message size of 100B was exceeded.")


# --------------------------------------------------------------------------- row 10

ROW10 = [
    pytest.param("[" * 20000, "The message is nested too deeply.", id="nesting"),
    pytest.param(
        '{"type":1,"invocationId":"1","target":"Echo","arguments":[' + "7" * 5000 + "]}",
        "Error reading JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits;"
        " use sys.set_int_max_str_digits() to increase the limit",
        id="5000-digits",
    ),
    pytest.param(
        '{"type":1,"invocationId":"1","target":"Echo","arguments":[NaN]}',
        "Error reading JSON: NaN is not valid JSON",
        id="NaN",
    ),
    pytest.param(
        '{"type":1,"invocationId":"1","target":"Echo","arguments":[Infinity]}',
        "Error reading JSON: Infinity is not valid JSON",
        id="Infinity",
    ),
    pytest.param(
        '{"type":1,"invocationId":"1","target":"Echo","arguments":[1e999]}',
        "Error reading JSON: A number is out of the range of a double.",
        id="overflow",
    ),
    pytest.param(
        '{"type":1,"invocationId":"1","target":"Echo","invocationId":"2","arguments":[]}',
        "Error reading JSON: duplicate keys in a JSON object",
        id="duplicate-keys",
    ),
    pytest.param(
        '\ufeff{"type":1,"invocationId":"1","target":"Echo","arguments":[1]}',
        "Error reading JSON: Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 (char 0)",
        id="BOM",
    ),
    pytest.param(
        '{"type":1,"invocationId":"1","target":"SendToGroup","arguments":["g","\\ud800"]}',
        "Error reading JSON: 'utf-8' codec can't encode character '\\ud800' in position 0: surrogates not allowed",
        id="lone-surrogate",
    ),
]


@pytest.mark.parametrize(("record", "error"), ROW10)
async def test_row10_json_hazards_close_with_protocol_error(new_client, record, error):
    """Row 10 (and row 9's lone surrogate): each hazard → Close msg, never another exception; nothing fans out."""
    member = await new_client()
    assert await member.invoke("JoinGroup", "g") is True
    bad = await new_client()
    await bad.send_text(record + RS)
    await bad.assert_closed(CLOSED + "ProtocolError: " + error)
    await member.assert_nothing()
    await member.assert_echo()


# --------------------------------------------------------------------------- row 11


async def test_row11_wrong_protocol(new_client):
    """Row 11: an unknown protocol ("protobuf") → HandshakeResponse error, then close."""
    client = await new_client(handshake=False)
    await client.send_text('{"protocol":"protobuf","version":1}' + RS)
    assert await client.receive_record() == {"error": "The protocol 'protobuf' is not supported."}
    await client.assert_closed()


async def test_row11_messagepack_when_disabled(new_client, settings):
    """Row 11: MessagePack left out of PROTOCOLS → refused as .NET refuses a protocol it does not have."""
    settings.SIGNALR_GROUPS = {**getattr(settings, "SIGNALR_GROUPS", {}), "PROTOCOLS": ["json"]}
    client = await new_client(handshake=False)
    await client.send_text('{"protocol":"messagepack","version":1}' + RS)
    assert await client.receive_record() == {"error": "The protocol 'messagepack' is not supported."}
    await client.assert_closed()


async def test_row11_unsupported_version(new_client):
    """Row 11: json version 3 → HandshakeResponse error, then close."""
    client = await new_client(handshake=False)
    await client.send_text('{"protocol":"json","version":3}' + RS)
    assert await client.receive_record() == {"error": "The server does not support version 3 of the 'json' protocol."}
    await client.assert_closed()


@pytest.mark.parametrize("version", [0, 2])
async def test_row11_versions_0_and_2_are_accepted(new_client, version):
    """Row 11 (contrast): json versions 0 and 2 are accepted (as on .NET 8+)."""
    client = await new_client(handshake=False)
    await client.send_text(json.dumps({"protocol": "JSON", "version": version}) + RS)
    assert await client.receive_record() == {}
    await client.assert_echo()


async def test_row11_first_message_not_a_handshake(new_client):
    """Row 11: an invocation instead of a handshake → HandshakeResponse error, then close."""
    client = await new_client(handshake=False)
    await client.send_text(invocation("1", "Echo", "x"))
    assert await client.receive_record() == {
        "error": "An unexpected error occurred during connection handshake. Missing required property 'protocol'."
    }
    await client.assert_closed()


async def test_row11_malformed_handshake(new_client):
    """Row 11: a handshake that is not JSON → HandshakeResponse error, then close."""
    client = await new_client(handshake=False)
    await client.send_text('{"protocol":' + RS)
    assert await client.receive_record() == {
        "error": "An unexpected error occurred during connection handshake. "
        "Error reading JSON: Expecting value: line 1 column 13 (char 12)"
    }
    await client.assert_closed()


async def test_row11_handshake_over_the_limit(new_client):
    """Row 11: a handshake of 32 KB + 1 without a separator → "Handshake was canceled.", then close."""
    client = await new_client(handshake=False)
    await client.send_text('{"protocol":"json","version":1,"pad":"' + "x" * MAX)
    assert await client.receive_record() == {"error": "Handshake was canceled."}
    await client.assert_closed()


async def test_row11_handshake_in_pieces(new_client):
    """Row 11 (contrast): a handshake split across frames is answered once its RS arrives."""
    client = await new_client(handshake=False)
    await client.send_text('{"protocol":"js')
    await client.send_text('on","version":1}')
    await client.assert_nothing()
    await client.send_text(RS)
    assert await client.receive_record() == {}
    await client.assert_echo()


async def test_row11_no_handshake_within_the_timeout(new_client):
    """Row 11: no handshake within HANDSHAKE_TIMEOUT → socket closed with no handshake response."""
    with hub_settings(HANDSHAKE_TIMEOUT=0.3):
        client = await new_client(handshake=False)
        await client.assert_nothing(timeout=0.15)
        await client.send_text('{"protocol":"json"')  # a partial handshake does not extend the deadline
        assert await client.communicator.receive_output(2) == {"type": "websocket.close", "code": 1000}
        await client.communicator.wait(2)


async def test_row11_partial_handshake_then_disconnect(new_client):
    """Row 11: a partial handshake then the client goes away: the server ends cleanly, nothing registered."""
    client = await new_client(handshake=False)
    await client.send_text('{"protocol":"json","ver')
    await client.disconnect()
    assert client.communicator.future.done()
    assert client.communicator.future.exception() is None
    manager = get_manager(InteropHub.hub_key())
    assert manager is None or not manager.connections


# --------------------------------------------------------------------------- row 13


async def test_row13_duplicate_in_flight_invocation_id(new_client):
    """Row 13: the same invocationId twice in flight → the first is answered, then Close msg."""
    healthy = await new_client()
    client = await new_client()
    await client.send_text(invocation("dup", "Echo", 1) + invocation("dup", "Echo", 2))
    assert await client.receive_record() == completion("dup", 1)
    await client.assert_closed(CLOSED + "ProtocolError: Invocation ID 'dup' is already in use.")
    await healthy.assert_echo()


async def test_row13_invocation_id_reused_after_completion_is_fine(new_client):
    """Row 13 (contrast): an id may be reused once its invocation completed."""
    client = await new_client()
    await client.send_text(invocation("same", "Echo", 1))
    assert await client.receive_record() == completion("same", 1)
    await client.send_text(invocation("same", "Echo", 2))
    assert await client.receive_record() == completion("same", 2)


@pytest.mark.parametrize(
    ("record", "error"),
    [
        pytest.param(
            '{"type":3,"invocationId":"nope","result":1}',
            "Received a message for unknown invocation ID 'nope'.",
            id="completion",
        ),
        pytest.param(
            '{"type":3,"invocationId":"nope","error":"x"}',
            "Received a message for unknown invocation ID 'nope'.",
            id="completion-error",
        ),
        pytest.param(
            '{"type":2,"invocationId":"nope","item":1}',
            "Received a message for unknown invocation ID 'nope'.",
            id="stream-item",
        ),
        pytest.param(
            json.dumps({"type": 1, "invocationId": "i" * 257, "target": "Echo", "arguments": [1]}),
            "Invocation ID is longer than 256 characters.",
            id="long-id",
        ),
    ],
)
async def test_row13_protocol_errors(new_client, record, error):
    """Row 13: Completion/StreamItem for an unknown id, or an invocationId over 256 chars → Close msg."""
    client = await new_client()
    await client.send_text(record + RS)
    await client.assert_closed(CLOSED + "ProtocolError: " + error)


async def test_row13_invocation_id_of_256_chars_is_accepted(new_client):
    """Row 13 (boundary): an invocationId of exactly 256 characters works."""
    client = await new_client()
    await client.send_text(invocation("i" * 256, "Echo", "ok"))
    assert await client.receive_record() == completion("i" * 256, "ok")


async def test_row13_cancel_for_unknown_id_is_ignored(new_client):
    """Row 13 (contrast): a CancelInvocation for an unknown id is ignored, as the spec says."""
    client = await new_client()
    await client.send_text('{"type":5,"invocationId":"nope"}' + RS)
    await client.assert_nothing()
    await client.assert_echo()


# --------------------------------------------------------------------------- rows 29-31: group names

NFC_E = unicodedata.normalize("NFC", "é")
NFD_E = unicodedata.normalize("NFD", "é")
DISTINCT_NAMES = [
    # row 29: characters a channel-layer group name cannot hold
    "room 1",
    "a!b",
    "*",
    "../x",
    "abc\n",
    "abc",
    "g.x",
    "g_x",
    "Room 1",
    # row 30: at and around the channel layer's own 100-character limit
    "n" * 99,
    "n" * 100,
    "n" * 256,
    # row 31: Unicode
    "🎉",
    "🎊",
    "שלום",
    "مرحبا",
    NFC_E,
    NFD_E,
    "e",
    "١٢٣",
    "123",
]


async def test_rows29_31_group_names_stay_distinct(new_client):
    """Rows 29, 30, 31: odd, long and Unicode names all work, and no two of them collide."""
    assert NFC_E != NFD_E
    members = {}
    for name in DISTINCT_NAMES:
        member = await new_client()
        assert await member.invoke("JoinGroup", name) is True
        members[name] = member
    sender = await new_client()
    for index, name in enumerate(DISTINCT_NAMES):
        assert await sender.invoke("SendToGroup", name, f"to #{index}") is None
    for index, name in enumerate(DISTINCT_NAMES):
        assert await members[name].receive_record() == group_message(f"to #{index}")
    for member in members.values():
        await member.assert_nothing(timeout=0.05)
    await sender.assert_nothing()


async def test_row29_leave_group_with_odd_name(new_client):
    """Row 29: LeaveGroup with a name the channel layer could not hold stops the messages."""
    member = await new_client()
    sender = await new_client()
    assert await member.invoke("JoinGroup", "../x\n") is True
    await sender.invoke("SendToGroup", "../x\n", "one")
    assert await member.receive_record() == group_message("one")
    assert await member.invoke("LeaveGroup", "../x\n") is True
    await sender.invoke("SendToGroup", "../x\n", "two")
    await member.assert_nothing()


@pytest.mark.parametrize("method", ["JoinGroup", "LeaveGroup", "SendToGroup"])
async def test_row29_empty_group_name(new_client, method):
    """Row 29: an empty group name → a clear Completion error; the connection stays open."""
    client = await new_client()
    arguments = ["", "m"] if method == "SendToGroup" else [""]
    assert await client.invoke_record(method, *arguments) == failure(
        "i1",
        f"An unexpected error occurred invoking '{method}' on the server. "
        "HubException: A group name must not be empty.",
    )
    await client.assert_echo()


@pytest.mark.parametrize("name", [5, None, ["a"], {"a": 1}, True], ids=["int", "null", "list", "object", "bool"])
async def test_row29_non_string_group_name(new_client, name):
    """Row 29: a non-string group name → Completion error (the ``str`` annotation refuses it); no 1011."""
    client = await new_client()
    assert await client.invoke_record("JoinGroup", name) == failure(
        "i1", "Failed to invoke 'JoinGroup' due to an error on the server."
    )
    await client.assert_echo()


async def test_row29_non_string_group_name_in_a_list(new_client):
    """Row 29: SendToGroups(["a", 5]) → generic Completion error; the connection stays open."""
    client = await new_client()
    assert await client.invoke_record("SendToGroups", ["a", 5], "m") == failure(
        "i1", "An unexpected error occurred invoking 'SendToGroups' on the server."
    )
    await client.assert_echo()


@pytest.mark.parametrize("length", [257, 10_000])
@pytest.mark.parametrize("method", ["JoinGroup", "SendToGroup"])
async def test_row30_group_name_over_the_limit(new_client, method, length):
    """Row 30: a name of 257 or 10 000 characters → Completion error naming the limit."""
    client = await new_client()
    arguments = ["g" * length, "m"] if method == "SendToGroup" else ["g" * length]
    assert await client.invoke_record(method, *arguments) == failure(
        "i1",
        f"An unexpected error occurred invoking '{method}' on the server. "
        f"HubException: A group name must be at most 256 characters long (got {length}).",
    )
    await client.assert_echo()


async def test_row30_group_name_limit_follows_the_setting(new_client):
    """Row 30: MAX_GROUP_NAME_LENGTH is honoured."""
    with hub_settings(MAX_GROUP_NAME_LENGTH=10):
        client = await new_client()
        assert await client.invoke("JoinGroup", "g" * 10) is True
        assert await client.invoke_record("JoinGroup", "g" * 11) == failure(
            "i2",
            "An unexpected error occurred invoking 'JoinGroup' on the server. "
            "HubException: A group name must be at most 10 characters long (got 11).",
        )


# --------------------------------------------------------------------------- row 32


@pytest.mark.parametrize("name", ["alice", "user.alice", "users.alice", "user:alice", "sgr.user.alice"])
async def test_row32_group_named_like_a_user_does_not_receive_user_messages(new_client, name):
    """Row 32: joining a group named after a user id does not subscribe to that user's messages."""
    alice = await new_client(user=FakeUser("alice"))
    assert await alice.invoke("GetUserIdentifier") == "alice"
    intruder = await new_client()
    assert await intruder.invoke("JoinGroup", name) is True
    sender = await new_client()
    await sender.invoke("SendToUser", "alice", "private")
    assert await alice.receive_record() == {"type": 1, "target": "Receive", "arguments": ["user", "private"]}
    await intruder.assert_nothing()
    # The group itself works, and the user is not in it.
    await sender.invoke("SendToGroup", name, "public")
    assert await intruder.receive_record() == group_message("public")
    await alice.assert_nothing()


async def test_row32_group_of_another_hub_is_separate(new_client):
    """Row 32: group "x" of OtherHub is not group "x" of InteropHub, in either direction."""
    interop = await new_client()
    other = await new_client(hub=OtherHub)
    assert await interop.invoke("JoinGroup", "x") is True
    assert await other.invoke("JoinGroup", "x") is True
    # The sender is a member: its group message comes before its Completion.
    await interop.send_text(invocation("s1", "SendToGroup", "x", "from interop"))
    assert await interop.receive_records(2) == [group_message("from interop"), completion("s1", None)]
    await other.assert_nothing()
    await other.send_text(invocation("s2", "SendToGroup", "x", "from other"))
    assert await other.receive_records(2) == [group_message("from other"), completion("s2", None)]
    await interop.assert_nothing()
