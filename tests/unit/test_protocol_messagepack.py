"""Unit tests of the MessagePack hub protocol: VarInt framing, message parsing, MessagePack hazards, encoding,
and property tests (only a protocol error escapes, memory stays bounded, any split reads the same)."""

from __future__ import annotations

import contextlib
import datetime
import decimal
import functools
import time
import tracemalloc
import uuid
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from django.utils.translation import gettext_lazy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalr_groups.exceptions import MessageTooLargeError, PayloadError, ProtocolError
from signalr_groups.protocol import json as json_protocol
from signalr_groups.protocol.messagepack import (
    MAX_DEPTH,
    PING_FRAME,
    MessagePackReader,
    encode_value,
    invocation_from_json_record,
    parse_message,
    write_ack,
    write_close,
    write_completion,
    write_invocation,
    write_sequence,
    write_stream_item,
)
from signalr_groups.protocol.messages import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)

TOO_LARGE = "The maximum message size of {}B was exceeded."
UTC = datetime.UTC
#: Most bytes the tests allow a hostile message to make Python allocate.
SMALL_PEAK = 256 * 1024


def pack(value: Any) -> bytes:
    """A message body, packed by msgpack itself (what another client would send)."""
    return msgpack.packb(value, use_bin_type=True, datetime=True)


def frame(body: bytes) -> bytes:
    """``body`` with its VarInt length prefix."""
    prefix = bytearray()
    length = len(body)
    while length > 0x7F:
        prefix.append(length & 0x7F | 0x80)
        length >>= 7
    prefix.append(length)
    return bytes(prefix) + body


def read_all(data: bytes, limit: int = 1 << 20) -> list[HubMessage | None]:
    """Everything a fresh reader gets from ``data``, parsed."""
    bodies, error = MessagePackReader(limit).feed(data)
    assert error is None
    return [parse_message(body) for body in bodies]


def read_one(data: bytes) -> HubMessage | None:
    (message,) = read_all(data)
    return message


def measure_peak(action: Callable[[], object]) -> int:
    """Peak of Python allocations (tracemalloc) while ``action`` runs."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def assert_peak_below(action: Callable[[], object], bound: int) -> None:
    """Run ``action`` and check that it allocated less than ``bound`` bytes at its peak.

    msgpack interns map keys, and now and then the interpreter rebuilds its table of interned strings
    (about 2 MB) whatever the input. So a high first measure is taken again: an input that makes the
    code allocate too much does it every time.
    """
    peak = measure_peak(action)
    if peak >= bound:
        peak = measure_peak(action)
    assert peak < bound


# --------------------------------------------------------------------------- MessagePackReader


def test_reader_several_messages_in_one_feed():
    stream = PING_FRAME + frame(b"\x92\x08\x01") + PING_FRAME
    assert MessagePackReader(1024).feed(stream) == ([b"\x91\x06", b"\x92\x08\x01", b"\x91\x06"], None)


def test_reader_message_split_across_feeds():
    reader = MessagePackReader(1024)
    message = write_invocation("Echo", ["x" * 200])  # a 2-byte prefix
    assert message[:2] == bytes([len(message) - 2 & 0x7F | 0x80, (len(message) - 2) >> 7])
    assert reader.feed(message[:1]) == ([], None)
    assert reader.pending_bytes == 1
    assert reader.feed(message[1:2]) == ([], None)
    assert reader.feed(message[2:50]) == ([], None)
    assert reader.pending_bytes == 50
    assert reader.feed(message[50:] + PING_FRAME[:1]) == ([message[2:]], None)
    assert reader.pending_bytes == 1
    assert reader.feed(PING_FRAME[1:]) == ([b"\x91\x06"], None)
    assert reader.pending_bytes == 0


def test_reader_byte_by_byte_reads_the_same_as_whole():
    stream = (
        write_invocation("Send", ["a" * 300, {"k": list(range(50))}])  # 2-byte prefix
        + write_stream_item("1", "b" * 20000)  # 3-byte prefix
        + PING_FRAME
        + write_close("bye", allow_reconnect=False)
    )
    whole, error = MessagePackReader(1 << 16).feed(stream)
    assert error is None and len(whole) == 4
    reader = MessagePackReader(1 << 16)
    got: list[bytes] = []
    for index in range(len(stream)):
        bodies, error = reader.feed(stream[index : index + 1])
        assert error is None
        got.extend(bodies)
    assert got == whole and reader.pending_bytes == 0


def test_reader_accepts_a_message_of_exactly_the_limit():
    body = pack("x" * 13)  # 14 bytes
    reader = MessagePackReader(14)
    assert reader.feed(frame(body)) == ([body], None)


def test_reader_refuses_a_declared_length_one_over_the_limit_as_soon_as_the_prefix_is_read():
    reader = MessagePackReader(14)
    bodies, error = reader.feed(b"\x0f")
    assert bodies == []
    assert isinstance(error, MessageTooLargeError)
    assert str(error) == TOO_LARGE.format(14)
    assert reader.pending_bytes == 0


def test_reader_returns_the_messages_before_an_error():
    reader = MessagePackReader(100)
    bodies, error = reader.feed(PING_FRAME + PING_FRAME + b"\x65" + b"\x00" * 10)
    assert bodies == [b"\x91\x06", b"\x91\x06"]
    assert isinstance(error, MessageTooLargeError)


def test_reader_huge_declared_length_allocates_nothing():
    """A 5-byte prefix declaring 2 GB - 1 with a 32 KB limit: an error at once, nothing buffered."""

    def action() -> None:
        bodies, error = MessagePackReader(32 * 1024).feed(b"\xff\xff\xff\xff\x07" + b"\x00" * 100)
        assert bodies == [] and isinstance(error, MessageTooLargeError)
        assert str(error) == TOO_LARGE.format(32 * 1024)

    assert_peak_below(action, SMALL_PEAK)


def test_reader_huge_declared_length_within_the_limit_buffers_only_what_arrived():
    def action() -> None:
        reader = MessagePackReader(2**31 - 1)
        assert reader.feed(b"\xff\xff\xff\xff\x07" + b"\x00" * 100) == ([], None)
        assert reader.pending_bytes == 105

    assert_peak_below(action, SMALL_PEAK)


@pytest.mark.parametrize(
    "prefix",
    [
        b"\xff\xff\xff\xff\x08",  # 2**31: over 2 GB
        b"\xff\xff\xff\xff\x0f",
        b"\x80\x80\x80\x80\x80",  # a sixth byte would follow
        b"\x80\x80\x80\x80\x80\x01",
    ],
)
def test_reader_malformed_prefix(prefix):
    reader = MessagePackReader(2**31 - 1)
    bodies, error = reader.feed(PING_FRAME + prefix)
    assert bodies == [b"\x91\x06"]
    assert type(error) is ProtocolError
    assert str(error) == "Messages over 2GB in size are not supported."
    assert reader.pending_bytes == 0


def test_reader_largest_prefix_is_accepted():
    reader = MessagePackReader(2**31 - 1)
    assert reader.feed(b"\xff\xff\xff\xff\x07") == ([], None)
    assert reader.pending_bytes == 5


def test_reader_non_minimal_prefix_is_accepted():
    """``0x82 0x00`` is 2 written in two bytes; .NET's reader accepts it too."""
    assert MessagePackReader(1024).feed(b"\x82\x00\x91\x06") == ([b"\x91\x06"], None)


def test_reader_zero_length_message_is_a_protocol_error():
    reader = MessagePackReader(1024)
    bodies, error = reader.feed(PING_FRAME + b"\x00" + PING_FRAME)
    assert bodies == [b"\x91\x06"]
    assert type(error) is ProtocolError and str(error) == "A message of length zero was received."
    with pytest.raises(ProtocolError, match="length zero"):
        parse_message(b"")


def test_reader_holds_at_most_the_limit_plus_the_prefix():
    reader = MessagePackReader(300)
    assert reader.feed(b"\xac\x02" + b"\x00" * 299) == ([], None)  # 300 declared, 299 arrived
    assert reader.pending_bytes == 301
    assert reader.feed(b"\x00")[0] == [b"\x00" * 300]
    assert reader.pending_bytes == 0


def test_reader_truncated_message_is_held_not_returned():
    message = write_invocation("Send", [1, 2, 3])
    reader = MessagePackReader(1024)
    assert reader.feed(message[:-1]) == ([], None)
    assert reader.pending_bytes == len(message) - 1


# --------------------------------------------------------------------------- parse_message: every type

# The examples of HubProtocol.md §MessagePack Encoding, byte for byte.
SPEC_EXAMPLES = [
    (
        "96 01 80 a3 78 79 7a a6 6d 65 74 68 6f 64 91 2a 90",
        InvocationMessage(target="method", arguments=[42], invocation_id="xyz"),
    ),
    ("96 01 80 c0 a6 6d 65 74 68 6f 64 91 2a 90", InvocationMessage(target="method", arguments=[42])),
    (
        "96 04 80 a3 78 79 7a a6 6d 65 74 68 6f 64 91 2a 90",
        StreamInvocationMessage(invocation_id="xyz", target="method", arguments=[42]),
    ),
    ("94 02 80 a3 78 79 7a 2a", StreamItemMessage(invocation_id="xyz", item=42)),
    ("95 03 80 a3 78 79 7a 01 a5 45 72 72 6f 72", CompletionMessage(invocation_id="xyz", error="Error")),
    ("94 03 80 a3 78 79 7a 02", CompletionMessage(invocation_id="xyz")),
    ("95 03 80 a3 78 79 7a 03 2a", CompletionMessage(invocation_id="xyz", result=42, has_result=True)),
    ("93 05 80 a3 78 79 7a", CancelInvocationMessage(invocation_id="xyz")),
    ("91 06", PingMessage()),
    ("92 07 a3 78 79 7a", CloseMessage(error="xyz")),
    ("93 07 a3 78 79 7a c3", CloseMessage(error="xyz", allow_reconnect=True)),
    ("92 08 cc 24", AckMessage(sequence_id=36)),
    ("92 09 cc 13", SequenceMessage(sequence_id=19)),
    (
        "96 01 82 a1 78 a1 79 a1 7a a1 7a a3 78 79 7a a6 6d 65 74 68 6f 64 91 2a 90",
        InvocationMessage(target="method", arguments=[42], invocation_id="xyz"),
    ),
]


@pytest.mark.parametrize(("body", "expected"), SPEC_EXAMPLES)
def test_parse_message_spec_examples(body, expected):
    assert parse_message(bytes.fromhex(body)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # The JS client leaves out StreamIds when there are none: a 5-element Invocation.
        ([1, {}, "0", "Echo", ["hi"]], InvocationMessage(target="Echo", arguments=["hi"], invocation_id="0")),
        ([1, {}, None, "Send", []], InvocationMessage(target="Send", arguments=[])),
        ([1, {}, "1", "Up", [], ["2", "3"]], InvocationMessage("Up", [], "1", ["2", "3"])),
        ([1, {}, None, "Up", [], None], InvocationMessage("Up", [])),
        ([1, None, None, "NoHeaders", []], InvocationMessage("NoHeaders", [])),
        ([4, {}, "7", "Count", [10]], StreamInvocationMessage("7", "Count", [10])),
        ([2, {}, "7", None], StreamItemMessage("7", None)),
        ([3, {}, "7", 3, None], CompletionMessage("7", result=None, has_result=True)),
        ([3, {"k": "v"}, "7", 2], CompletionMessage("7")),
        ([7, None], CloseMessage()),  # what the JS client sends on stop()
        ([7, None, False], CloseMessage(allow_reconnect=False)),
        ([7, None, None], CloseMessage()),
        ([8, 2**40], AckMessage(2**40)),
        ([9, 0], SequenceMessage(0)),
    ],
)
def test_parse_message_client_shapes(value, expected):
    assert parse_message(pack(value)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([1, {}, "1", "M", [1], [], "future", {"x": 1}], InvocationMessage("M", [1], "1")),
        ([2, {}, "1", 5, "future"], StreamItemMessage("1", 5)),
        ([3, {}, "1", 2, "ignored", "future"], CompletionMessage("1")),
        ([3, {}, "1", 1, "boom", "future"], CompletionMessage("1", error="boom")),
        ([5, {}, "1", "future"], CancelInvocationMessage("1")),
        ([6, "future", 1], PingMessage()),
        ([7, "e", True, "future"], CloseMessage("e", True)),
        ([8, 1, "future"], AckMessage(1)),
    ],
)
def test_parse_message_ignores_extra_trailing_elements(value, expected):
    assert parse_message(pack(value)) == expected


@pytest.mark.parametrize("value", [[99], [0], [-1], [10, {}, "x"], [2**63, "anything", [1, {"x": 2}]]])
def test_parse_message_unknown_type_is_ignored(value):
    assert parse_message(pack(value)) is None


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (1, "A hub message must be a MessagePack array."),
        ({"type": 1}, "A hub message must be a MessagePack array."),
        ("x", "A hub message must be a MessagePack array."),
        (None, "A hub message must be a MessagePack array."),
        ([], "Missing required property 'type'."),
        (["1"], "Property 'type' must be an integer."),
        ([True], "Property 'type' must be an integer."),
        ([None], "Property 'type' must be an integer."),
        ([1.0], "Property 'type' must be an integer."),
    ],
)
def test_parse_message_bad_type(value, error):
    with pytest.raises(ProtocolError) as info:
        parse_message(pack(value))
    assert str(info.value) == error


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ([1], "Missing required property 'headers'."),
        ([1, {}], "Missing required property 'invocationId'."),
        ([1, {}, None], "Missing required property 'target'."),
        ([1, {}, None, None, []], "Missing required property 'target'."),
        ([1, {}, None, "M"], "Missing required property 'arguments'."),
        ([1, {}, None, 5, []], "Property 'target' has the wrong type."),
        ([1, {}, None, "M", {}], "Property 'arguments' has the wrong type."),
        ([1, {}, None, "M", "a"], "Property 'arguments' has the wrong type."),
        ([1, {}, 7, "M", []], "Property 'invocationId' has the wrong type."),
        ([1, {}, b"1", "M", []], "Property 'invocationId' has the wrong type."),
        ([1, {}, None, "M", [], "1"], "Property 'streamIds' must be a list of strings."),
        ([1, {}, None, "M", [], [1]], "Property 'streamIds' must be a list of strings."),
        ([1, [], None, "M", []], "Property 'headers' must be a map of strings to strings."),
        ([1, "h", None, "M", []], "Property 'headers' must be a map of strings to strings."),
        ([1, {"k": 1}, None, "M", []], "Property 'headers' must be a map of strings to strings."),
        ([1, {"k": None}, None, "M", []], "Property 'headers' must be a map of strings to strings."),
        ([4, {}, None, "M", []], "Missing required property 'invocationId'."),
        ([4, {}, "1", "M"], "Missing required property 'arguments'."),
        ([2, {}, "1"], "Missing required property 'item'."),
        ([2, {}, None, 1], "Missing required property 'invocationId'."),
        ([3, {}, "1"], "Missing required property 'resultKind'."),
        ([3, {}, "1", "3", 1], "Property 'resultKind' has the wrong type."),
        ([3, {}, "1", True, 1], "Property 'resultKind' has the wrong type."),
        ([3, {}, "1", 4, 1], "Invalid invocation result kind."),
        ([3, {}, "1", 0], "Invalid invocation result kind."),
        ([3, {}, "1", 3], "Missing required property 'result'."),
        ([3, {}, "1", 1], "Missing required property 'error'."),
        ([3, {}, "1", 1, None], "Missing required property 'error'."),
        ([3, {}, "1", 1, 5], "Property 'error' has the wrong type."),
        ([5, {}], "Missing required property 'invocationId'."),
        ([7], "Missing required property 'error'."),
        ([7, 1], "Property 'error' has the wrong type."),
        ([7, None, 1], "Property 'allowReconnect' has the wrong type."),
        ([8], "Missing required property 'sequenceId'."),
        ([8, "1"], "Property 'sequenceId' has the wrong type."),
        ([9, True], "Property 'sequenceId' has the wrong type."),
        ([9, 1.5], "Property 'sequenceId' has the wrong type."),
    ],
)
def test_parse_message_wrong_elements(value, error):
    with pytest.raises(ProtocolError) as info:
        parse_message(pack(value))
    assert str(info.value) == error


def test_invocation_id_length_limit():
    limit = json_protocol.MAX_INVOCATION_ID_LENGTH
    assert parse_message(pack([5, {}, "x" * limit])) == CancelInvocationMessage("x" * limit)
    for value in ([5, {}, "x" * (limit + 1)], [1, {}, "x" * (limit + 1), "M", []], [3, {}, "x" * (limit + 1), 2]):
        with pytest.raises(ProtocolError, match=f"longer than {limit} characters"):
            parse_message(pack(value))


def test_payload_types_survive_decoding():
    args: list[Any] = [None, True, -(2**63), 2**64 - 1, 1.5, float("inf"), "é", b"\x00\xff", [1, [2]], {"a": {"b": []}}]
    message = parse_message(pack([1, {}, None, "M", args]))
    assert isinstance(message, InvocationMessage)
    assert message.arguments == args


def test_nan_is_accepted():
    message = parse_message(pack([2, {}, "1", float("nan")]))
    assert isinstance(message, StreamItemMessage) and message.item != message.item


# --------------------------------------------------------------------------- MessagePack hazards


def test_deep_nesting_is_refused_without_a_crash():
    """SignalR CVE-2026-45591 was a stack overflow on nested arrays: 100,000 levels inside an argument."""
    body = b"\x95\x01\x80\xc0\xa1M\x91" + b"\x91" * 100_000 + b"\xc0"
    started = time.perf_counter()
    with pytest.raises(ProtocolError, match="The message is nested too deeply."):
        parse_message(body)
    assert time.perf_counter() - started < 1
    bodies, error = MessagePackReader(1 << 20).feed(frame(body))
    assert error is None and bodies == [body]


def nested(depth: int, opener: bytes) -> bytes:
    """An Invocation (depth 1) whose arguments (depth 2) hold containers down to ``depth`` levels in all."""
    inner = depth - 2
    if opener == b"\x81":  # maps: each level is {"k": ...}
        return b"\x95\x01\x80\xc0\xa1M\x91" + b"\x81\xa1k" * inner + b"\xc0"
    return b"\x95\x01\x80\xc0\xa1M\x91" + opener * inner + b"\xc0"


@pytest.mark.parametrize("opener", [b"\x91", b"\xdc\x00\x01", b"\xdd\x00\x00\x00\x01", b"\x81"])
def test_max_depth_is_accepted_and_one_more_is_refused(opener):
    message = parse_message(nested(MAX_DEPTH, opener))
    assert isinstance(message, InvocationMessage)
    with pytest.raises(ProtocolError, match="nested too deeply"):
        parse_message(nested(MAX_DEPTH + 1, opener))


def test_empty_containers_count_toward_the_depth():
    base = b"\x95\x01\x80\xc0\xa1M\x91" + b"\x91" * (MAX_DEPTH - 3)
    assert isinstance(parse_message(base + b"\x90"), InvocationMessage)
    assert isinstance(parse_message(base + b"\x80"), InvocationMessage)
    for empty in (b"\x91\x90", b"\x91\x80", b"\x91\xdc\x00\x00"):
        with pytest.raises(ProtocolError, match="nested too deeply"):
            parse_message(base + empty)


def refused(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_message(body)


HUGE_DECLARATIONS = [
    b"\xdd\xff\xff\xff\xff",  # array32 of 2**32 - 1 elements
    b"\xdc\xff\xff",  # array16
    b"\xdf\xff\xff\xff\xff",  # map32
    b"\xde\xff\xff",  # map16
    b"\xdb\xff\xff\xff\xff",  # str32
    b"\xc6\xff\xff\xff\xff",  # bin32
    b"\xc9\xff\xff\xff\xff\xff",  # ext32 (a timestamp type)
    b"\xc9\xff\xff\xff\xff\x05",  # ext32 of another type
]


@pytest.mark.parametrize("declaration", HUGE_DECLARATIONS)
def test_huge_declared_lengths_are_refused_fast_without_allocating(declaration):
    for body in (
        declaration + b"\x00" * 20,
        b"\x95\x01\x80\xc0\xa1M\x91" + declaration + b"\x00" * 20,
        b"\x95\x01\x80\xc0\xa1M" + declaration * 1000,
    ):
        started = time.perf_counter()
        assert_peak_below(functools.partial(refused, body), SMALL_PEAK)
        assert time.perf_counter() - started < 1


def test_nested_array_headers_allocate_nothing():
    """msgpack preallocates a list per array header: 1000 nested array32 headers would cost 40 MB."""
    body = b"\x95\x01\x80\xc0\xa1M" + (b"\xdd" + (5000).to_bytes(4, "big")) * 1000
    assert_peak_below(lambda: refused(body), SMALL_PEAK)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"\x92\x08", "truncated"),
        (b"\x92\x08\xcd\x01", "truncated"),
        (b"\x95\x01\x80\xc0\xa4Sen", "truncated"),
        (b"\x94\x02\x80\xa3xy", "truncated"),
        (b"\x92\x02\x80\xa3xyz", "bytes after the message"),
        (b"\x91\x06\x00", "bytes after the message"),
        (b"\x91\x06\x91\x06", "bytes after the message"),
        (b"\x92\x08\xc1", "0xc1"),
        (b"\x94\x02\x80\xa1x\xd4\x05\x00", "extension type 5"),
        (b"\x94\x02\x80\xa1x\xc7\x00\x01", "extension type 1"),
        (b"\x94\x02\x80\xa1x\xd5\xff\x00\x00", "timestamp must be 4, 8 or 12 bytes"),
        (b"\x94\x02\x80\xa1x\xd8\xff" + b"\x00" * 16, "timestamp must be 4, 8 or 12 bytes"),
        (b"\x94\x02\x80\xa1x\xc7\x0c\xff" + b"\x00" * 4 + b"\x7f" + b"\xff" * 7, "Error reading MessagePack"),
        (b"\x94\x02\x80\xa1x\xa2\xed\xa0", "Error reading MessagePack"),  # an encoded surrogate
        (b"\x94\x02\x80\xa1x\xa1\xff", "Error reading MessagePack"),  # not UTF-8
        (b"\x95\x01\x80\xc0\xa2\xc3(\x90", "Error reading MessagePack"),  # the target is not UTF-8
    ],
)
def test_malformed_messagepack(body, error):
    with pytest.raises(ProtocolError, match=error):
        parse_message(body)


@pytest.mark.parametrize(
    "key",
    [b"\x01", b"\xc0", b"\xc3", b"\xc4\x01k", b"\x90", b"\x80", b"\xcb" + b"\x00" * 8, b"\xd6\xff\x00\x00\x00\x00"],
)
def test_non_string_map_keys_are_refused(key):
    for body in (
        b"\x94\x02\x80\xa1x\x81" + key + b"\x01",  # in a payload
        b"\x95\x01\x81" + key + b"\xa1v\xc0\xa1M\x90",  # in the headers
    ):
        with pytest.raises(ProtocolError, match="map keys must be strings"):
            parse_message(body)


def test_non_string_key_after_a_nested_value():
    """The key check tracks the position in a map through nested values."""
    body = b"\x94\x02\x80\xa1x\x82\xa1a\x92\x81\xa1b\x01\x90\x05\x01"
    with pytest.raises(ProtocolError, match="map keys must be strings"):
        parse_message(body)
    assert parse_message(pack([2, {}, "x", {"a": [{"b": 1}, []], "c": 1}])) == StreamItemMessage(
        "x", {"a": [{"b": 1}, []], "c": 1}
    )


def test_duplicate_keys_are_refused():
    for body in (
        b"\x94\x02\x80\xa1x\x82\xa1a\x01\xa1a\x02",
        b"\x95\x01\x82\xa1h\xa1v\xa1h\xa1w\xc0\xa1M\x90",  # in the headers
        b"\x94\x02\x80\xa1x\x92\x80\x82\xa1a\x01\xd9\x01a\x02",  # same key, str8 vs fixstr
    ):
        with pytest.raises(ProtocolError, match="duplicate keys"):
            parse_message(body)


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("ext", "expected"),
    [
        (b"\xd6\xff\x00\x00\x00\x01", datetime.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)),  # 32-bit
        (
            b"\xd7\xff" + ((1000 << 34) | 1_577_836_800).to_bytes(8, "big"),  # 64-bit
            datetime.datetime(2020, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        ),
        (
            b"\xc7\x0c\xff" + (0).to_bytes(4, "big") + (-1).to_bytes(8, "big", signed=True),  # 96-bit
            datetime.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
        ),
    ],
)
def test_timestamps_decode_to_aware_utc_datetimes(ext, expected):
    message = parse_message(b"\x94\x02\x80\xa1x" + ext)
    assert isinstance(message, StreamItemMessage)
    assert message.item == expected
    assert message.item.tzinfo is UTC


def test_datetimes_encode_as_timestamps():
    aware = datetime.datetime(2024, 2, 29, 12, 30, 15, 123456, tzinfo=UTC)
    naive = aware.replace(tzinfo=None)
    paris = aware.astimezone(datetime.timezone(datetime.timedelta(hours=1)))
    packed = encode_value(aware)
    assert packed[:2] == b"\xd7\xff"  # the 64-bit timestamp form
    assert encode_value(naive) == packed  # naive is taken as UTC
    assert encode_value(paris) == packed  # aware is converted to UTC
    assert msgpack.unpackb(packed, timestamp=3) == aware
    assert read_one(write_stream_item("1", [naive, paris])) == StreamItemMessage("1", [aware, aware])


def test_datetimes_before_1970_and_far_ahead():
    for value in (
        datetime.datetime(1, 1, 1, tzinfo=UTC),
        datetime.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),  # msgpack's own conversion gets this wrong
        datetime.datetime(1900, 6, 1, 0, 0, 0, 1),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
    ):
        message = read_one(write_stream_item("1", value))
        assert isinstance(message, StreamItemMessage)
        assert message.item == value.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- encoding and writers


def test_ping_frame():
    assert PING_FRAME == b"\x02\x91\x06"
    assert read_one(PING_FRAME) == PingMessage()


def test_writer_bytes():
    assert write_invocation("method", [42]) == frame(bytes.fromhex("96 01 80 c0 a6 6d 65 74 68 6f 64 91 2a 90"))
    assert write_invocation("m", ()) == b"\x08\x96\x01\x80\xc0\xa1m\x90\x90"
    assert write_completion("xyz") == frame(bytes.fromhex("94 03 80 a3 78 79 7a 02"))
    assert write_completion("xyz", error="Error") == frame(bytes.fromhex("95 03 80 a3 78 79 7a 01 a5 45 72 72 6f 72"))
    assert write_completion("xyz", result=42, has_result=True) == frame(bytes.fromhex("95 03 80 a3 78 79 7a 03 2a"))
    assert write_completion("xyz", result=None, has_result=True) == frame(bytes.fromhex("95 03 80 a3 78 79 7a 03 c0"))
    assert write_stream_item("xyz", 42) == frame(bytes.fromhex("94 02 80 a3 78 79 7a 2a"))
    assert write_close() == b"\x03\x92\x07\xc0"
    assert write_close("xyz") == frame(bytes.fromhex("92 07 a3 78 79 7a"))
    assert write_close("xyz", allow_reconnect=True) == frame(bytes.fromhex("93 07 a3 78 79 7a c3"))
    assert write_ack(36) == frame(bytes.fromhex("92 08 24"))
    assert write_sequence(300) == frame(bytes.fromhex("92 09 cd 01 2c"))


def test_every_writer_round_trips():
    stream = b"".join(
        [
            write_invocation("Send", ("a", 1, [2.5, None], {"k": b"\x00"})),
            write_completion("1", result={"x": [1]}, has_result=True),
            write_completion("2", error="boom"),
            write_completion("3"),
            write_completion("4", result="ignored"),  # has_result False: void
            write_stream_item("5", "item"),
            write_close(),
            write_close("bye", allow_reconnect=False),
            write_ack(7),
            write_sequence(8),
            PING_FRAME,
        ]
    )
    assert read_all(stream) == [
        InvocationMessage("Send", ["a", 1, [2.5, None], {"k": b"\x00"}]),
        CompletionMessage("1", result={"x": [1]}, has_result=True),
        CompletionMessage("2", error="boom"),
        CompletionMessage("3"),
        CompletionMessage("4"),
        StreamItemMessage("5", "item"),
        CloseMessage(),
        CloseMessage("bye", allow_reconnect=False),
        AckMessage(7),
        SequenceMessage(8),
        PingMessage(),
    ]


def test_long_messages_get_multibyte_prefixes():
    for size in (127, 128, 16383, 16384, 100_000):
        message = write_stream_item("1", "x" * size)
        (body,), error = MessagePackReader(1 << 20).feed(message)
        assert error is None and frame(body) == message
        assert read_one(message) == StreamItemMessage("1", "x" * size)


def test_django_types_encode_like_the_json_encoder():
    value = uuid.UUID("12345678-1234-5678-1234-567812345678")
    values = [
        datetime.date(2024, 2, 29),
        datetime.time(12, 30, 15, 500000),
        datetime.timedelta(days=1, seconds=5),
        decimal.Decimal("1.10"),
        value,
        gettext_lazy("lazy"),
    ]
    expected = [json_protocol.loads_strict(json_protocol.encode_json(item)) for item in values]
    assert expected == ["2024-02-29", "12:30:15.500", "P1DT00H00M05S", "1.10", str(value), "lazy"]
    assert msgpack.unpackb(encode_value(values)) == expected


def test_native_values_and_integer_limits():
    values = [None, True, False, 0, -1, 2**64 - 1, -(2**63), 1.5, float("nan"), float("-inf"), "é", b"\x01", (1, 2)]
    decoded = msgpack.unpackb(encode_value(values))
    assert decoded[:8] == [None, True, False, 0, -1, 2**64 - 1, -(2**63), 1.5]
    assert decoded[8] != decoded[8] and decoded[9] == float("-inf")
    assert decoded[10:] == ["é", b"\x01", [1, 2]]


class Unknown:
    pass


def self_referencing() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (Unknown, "Unknown"),
        (lambda: {1, 2}, "set"),
        (lambda: 2**64, "64 bits"),
        (lambda: -(2**63) - 1, "64 bits"),
        (lambda: "\ud800", "UTF-8"),
        (self_referencing, "MessagePack"),
        (lambda: {"a": [object()]}, "object"),
    ],
)
def test_unencodable_payloads_raise_payload_error(make: Callable[[], Any], error: str):
    value = make()
    with pytest.raises(PayloadError, match=error):
        encode_value(value)
    with pytest.raises(PayloadError, match=error):
        write_invocation("Send", [value])
    with pytest.raises(PayloadError, match=error):
        write_completion("1", result=value, has_result=True)
    with pytest.raises(PayloadError, match=error):
        write_stream_item("1", value)


# --------------------------------------------------------------------------- invocation_from_json_record


def test_invocation_from_json_record():
    args: list[Any] = ["a", 1, 2.5, None, True, {"k": [1, {"n": "é"}]}, 2**63]
    assert invocation_from_json_record(json_protocol.write_invocation("Send", args)) == write_invocation("Send", args)
    assert read_one(invocation_from_json_record('{"type":1,"target":"T","arguments":[],"invocationId":"9"}\x1e')) == (
        InvocationMessage("T", [], "9")
    )
    when = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    message = read_one(invocation_from_json_record(json_protocol.write_invocation("Send", [when])))
    assert message == InvocationMessage("Send", ["2024-01-01T00:00:00Z"])  # JSON carried a string


@pytest.mark.parametrize(
    "record",
    [
        '{"type":1,"target":"T","arguments":[]}',  # no separator
        '{"type":3,"invocationId":"1"}\x1e',
        '{"type":1,"target":5,"arguments":[]}\x1e',
        '{"type":1,"target":"T","arguments":{}}\x1e',
        '{"type":1,"target":"T"}\x1e',
        '{"type":1,"target":"T","arguments":[],"invocationId":1}\x1e',
        "[1]\x1e",
        "not json\x1e",
        '{"type":1,"target":"T","arguments":[]}\x1e{"type":6}\x1e',
        '{"type":1,"target":"T","arguments":[1e999]}\x1e',
        '{"type":1,"target":"T","arguments":[' + "1" * 30 + "]}\x1e",  # beyond 64 bits
        "\x1e",
    ],
)
def test_invocation_from_json_record_refuses(record):
    with pytest.raises(PayloadError):
        invocation_from_json_record(record)


# --------------------------------------------------------------------------- property tests

LIMIT = 4096
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID_FRAMES = [
    write_invocation("Send", ["a", 1, [2.5, None], {"k": b"\x00"}]),
    frame(pack([1, {"h": "v"}, "0", "Echo", ["hi", {"when": datetime.datetime(2024, 1, 1, tzinfo=UTC)}]])),
    frame(pack([4, {}, "1", "Count", [10], ["2"]])),
    write_completion("1", result={"x": [1, {"y": None}]}, has_result=True),
    write_completion("2", error="boom"),
    write_stream_item("3", [[[[1]]]]),
    write_close("bye", allow_reconnect=True),
    frame(pack([5, {}, "4"])),
    write_ack(70000),
    PING_FRAME,
]

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
#: Message-shaped arrays: a type (often valid), then elements of any kind.
message_values = st.tuples(st.one_of(st.integers(-2, 10), msgpack_values), st.lists(msgpack_values, max_size=6)).map(
    lambda parts: [parts[0], *parts[1]]
)


def feed_and_parse(chunks: list[bytes]) -> None:
    """Feed ``chunks`` to a reader and parse what comes out; only ProtocolError may escape, memory stays bounded."""

    def action() -> None:
        reader = MessagePackReader(LIMIT)
        for chunk in chunks:
            bodies, error = reader.feed(chunk)
            assert reader.pending_bytes <= LIMIT + 5
            for body in bodies:
                assert 0 < len(body) <= LIMIT
                with contextlib.suppress(ProtocolError):
                    parse_message(body)
            if error is not None:
                assert isinstance(error, ProtocolError)
                break

    assert_peak_below(action, 64 * sum(len(chunk) for chunk in chunks) + 1024 * 1024)


@FUZZ
@given(st.lists(st.binary(max_size=600), max_size=6))
def test_any_bytes_give_messages_or_a_protocol_error(chunks: list[bytes]) -> None:
    feed_and_parse(chunks)


@FUZZ
@given(st.binary(max_size=2000))
def test_any_body_gives_a_message_or_a_protocol_error(body: bytes) -> None:
    def action() -> None:
        with contextlib.suppress(ProtocolError):
            parse_message(body)

    assert_peak_below(action, 64 * len(body) + 1024 * 1024)


@FUZZ
@given(
    st.lists(st.sampled_from(VALID_FRAMES), min_size=1, max_size=4),
    st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from(["set", "insert", "delete"])), max_size=6
    ),
)
def test_mutated_frames_give_messages_or_a_protocol_error(
    frames: list[bytes], mutations: list[tuple[int, int, str]]
) -> None:
    data = bytearray(b"".join(frames))
    for position, byte, how in mutations:
        index = position % (len(data) + 1)
        if how == "insert":
            data.insert(index, byte)
        elif index < len(data):
            if how == "set":
                data[index] = byte
            else:
                del data[index]
    feed_and_parse([bytes(data)])


@FUZZ
@given(message_values)
def test_any_message_shaped_array_gives_a_message_or_a_protocol_error(value: list[Any]) -> None:
    body = pack(value)
    with contextlib.suppress(ProtocolError):
        parse_message(body)
    feed_and_parse([frame(body)])


@FUZZ
@given(st.lists(st.sampled_from(VALID_FRAMES), max_size=6), st.lists(st.integers(0, 2000), max_size=10))
def test_frames_split_anywhere_read_the_same(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frames)
    whole, error = MessagePackReader(LIMIT).feed(stream)
    assert error is None and len(whole) == len(frames)
    reader = MessagePackReader(LIMIT)
    got: list[bytes] = []
    start = 0
    for cut in [*sorted({min(cut, len(stream)) for cut in cuts}), len(stream)]:
        bodies, error = reader.feed(stream[start:cut])
        assert error is None
        got.extend(bodies)
        start = cut
    assert got == whole and reader.pending_bytes == 0
    assert [frame(body) for body in got] == frames
