"""Unit tests of the JSON hub protocol: record splitting, message parsing, JSON hazards, encoding, handshake."""

from __future__ import annotations

import datetime
import decimal
import json

import pytest

from signalr_groups.exceptions import HandshakeError, MessageTooLargeError, PayloadError, ProtocolError
from signalr_groups.protocol.handshake import (
    HANDSHAKE_OK,
    HandshakeRequest,
    parse_handshake,
    write_handshake_error,
)
from signalr_groups.protocol.json import (
    RecordReader,
    encode_json,
    loads_strict,
    parse_message,
    write_close,
    write_completion,
    write_invocation,
)
from signalr_groups.protocol.messages import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    InvocationMessage,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)

RS = "\x1e"
TOO_LARGE = "The maximum message size of {}B was exceeded."


# --------------------------------------------------------------------------- RecordReader


def test_reader_several_records_in_one_frame():
    reader = RecordReader(1024)
    assert reader.feed('{"type":6}' + RS + '{"type":1}' + RS + "{}" + RS) == (['{"type":6}', '{"type":1}', "{}"], None)


def test_reader_record_split_across_frames():
    reader = RecordReader(1024)
    assert reader.feed('{"ty') == ([], None)
    assert reader.feed('pe":') == ([], None)
    assert reader.feed("6}" + RS + '{"type"') == (['{"type":6}'], None)
    assert reader.feed(":7}" + RS) == (['{"type":7}'], None)


def test_reader_partial_record_yields_nothing_until_the_separator():
    reader = RecordReader(1024)
    assert reader.feed('{"type":6}') == ([], None)
    assert reader.feed("") == ([], None)
    assert reader.feed(RS) == (['{"type":6}'], None)
    assert reader.feed("") == ([], None)


def test_reader_empty_record_is_returned_and_is_a_protocol_error():
    reader = RecordReader(1024)
    assert reader.feed(RS) == ([""], None)
    with pytest.raises(ProtocolError, match="Error reading JSON: Expecting value"):
        parse_message("")


def test_reader_accepts_a_record_of_exactly_the_limit():
    reader = RecordReader(16)
    assert reader.feed("x" * 16 + RS) == (["x" * 16], None)


def test_reader_record_one_over_the_limit():
    reader = RecordReader(16)
    records, error = reader.feed("x" * 17 + RS)
    assert records == []
    assert isinstance(error, MessageTooLargeError)
    assert str(error) == TOO_LARGE.format(16)


def test_reader_limit_counts_utf8_bytes_not_characters():
    reader = RecordReader(8)
    assert reader.feed("éééé" + RS) == (["éééé"], None)  # 4 characters, 8 bytes
    records, error = reader.feed("ééééé" + RS)  # 5 characters, 10 bytes
    assert records == []
    assert str(error) == TOO_LARGE.format(8)
    reader = RecordReader(10)
    assert reader.feed("😀😀" + RS) == (["😀😀"], None)  # 8 bytes
    records, error = reader.feed("😀😀😀" + RS)  # 3 characters, 12 bytes
    assert records == []
    assert isinstance(error, MessageTooLargeError)


def test_reader_unterminated_tail_over_the_limit():
    reader = RecordReader(16)
    assert reader.feed("x" * 10) == ([], None)
    records, error = reader.feed("x" * 7)  # 17 characters and still no separator
    assert records == []
    assert str(error) == TOO_LARGE.format(16)


def test_reader_unterminated_multibyte_tail_over_the_limit():
    reader = RecordReader(8)
    assert reader.feed("éééé") == ([], None)
    records, error = reader.feed("é")
    assert records == []
    assert isinstance(error, MessageTooLargeError)


def test_reader_returns_the_records_before_an_oversized_one():
    reader = RecordReader(16)
    records, error = reader.feed("a" + RS + "b" + RS + "x" * 17 + RS + "c" + RS)
    assert records == ["a", "b"]
    assert isinstance(error, MessageTooLargeError)


def test_reader_returns_the_records_before_an_oversized_tail():
    reader = RecordReader(16)
    records, error = reader.feed("a" + RS + "b" + RS + "x" * 17)
    assert records == ["a", "b"]
    assert isinstance(error, MessageTooLargeError)


# --------------------------------------------------------------------------- parse_message: every type


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            '{"type":1,"target":"Send","arguments":["a",1,null,{"k":[true]}]}',
            InvocationMessage(target="Send", arguments=["a", 1, None, {"k": [True]}]),
        ),
        (
            '{"type":1,"invocationId":"42","target":"Echo","arguments":[],"headers":{"h":"v"}}',
            InvocationMessage(target="Echo", arguments=[], invocation_id="42"),
        ),
        (
            '{"type":1,"target":"Upload","arguments":[],"streamIds":["s1","s2"]}',
            InvocationMessage(target="Upload", arguments=[], stream_ids=["s1", "s2"]),
        ),
        ('{"type":2,"invocationId":"7","item":null}', StreamItemMessage(invocation_id="7", item=None)),
        ('{"type":2,"invocationId":"7","item":[1,2]}', StreamItemMessage(invocation_id="7", item=[1, 2])),
        ('{"type":3,"invocationId":"1"}', CompletionMessage(invocation_id="1")),
        ('{"type":3,"invocationId":"1","result":null}', CompletionMessage(invocation_id="1", has_result=True)),
        ('{"type":3,"invocationId":"1","result":5}', CompletionMessage(invocation_id="1", result=5, has_result=True)),
        ('{"type":3,"invocationId":"1","error":"boom"}', CompletionMessage(invocation_id="1", error="boom")),
        (
            '{"type":4,"invocationId":"3","target":"Counter","arguments":[10]}',
            StreamInvocationMessage(invocation_id="3", target="Counter", arguments=[10]),
        ),
        ('{"type":5,"invocationId":"3"}', CancelInvocationMessage(invocation_id="3")),
        ('{"type":6}', PingMessage()),
        ('{"type":7}', CloseMessage()),
        (
            '{"type":7,"error":"bye","allowReconnect":false}',
            CloseMessage(error="bye", allow_reconnect=False),
        ),
        ('{"type":8,"sequenceId":4}', AckMessage(sequence_id=4)),
        ('{"type":9,"sequenceId":5}', SequenceMessage(sequence_id=5)),
        ('  {"arguments":[],"target":"T","type":1}  ', InvocationMessage(target="T", arguments=[])),
    ],
)
def test_parse_message_every_type(record, expected):
    assert parse_message(record) == expected


@pytest.mark.parametrize("record", ['{"type":99}', '{"type":0}', '{"type":-1}', '{"type":99,"anything":[1,{"x":2}]}'])
def test_parse_message_unknown_type_is_ignored(record):
    assert parse_message(record) is None


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ("{}", "Missing required property 'type'."),
        ('{"type":null}', "Missing required property 'type'."),
        ('{"target":"Echo","arguments":[]}', "Missing required property 'type'."),
        ('{"type":"1"}', "Property 'type' must be an integer."),
        ('{"type":true}', "Property 'type' must be an integer."),
        ('{"type":false}', "Property 'type' must be an integer."),
        ('{"type":1.0}', "Property 'type' must be an integer."),
        ('{"type":[1]}', "Property 'type' must be an integer."),
        ("[1]", "A hub message must be a JSON object."),
        ("null", "A hub message must be a JSON object."),
        ('"x"', "A hub message must be a JSON object."),
        ("6", "A hub message must be a JSON object."),
    ],
)
def test_parse_message_bad_type(record, error):
    with pytest.raises(ProtocolError) as info:
        parse_message(record)
    assert type(info.value) is ProtocolError
    assert str(info.value) == error


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ('{"type":1,"arguments":[]}', "Missing required property 'target'."),
        ('{"type":1,"target":5,"arguments":[]}', "Property 'target' has the wrong type."),
        ('{"type":1,"target":null,"arguments":[]}', "Missing required property 'target'."),
        ('{"type":1,"target":"x"}', "Missing required property 'arguments'."),
        ('{"type":1,"target":"x","arguments":{}}', "Property 'arguments' has the wrong type."),
        ('{"type":1,"target":"x","arguments":"a"}', "Property 'arguments' has the wrong type."),
        ('{"type":1,"target":"x","arguments":[],"invocationId":5}', "Property 'invocationId' has the wrong type."),
        ('{"type":1,"target":"x","arguments":[],"invocationId":true}', "Property 'invocationId' has the wrong type."),
        ('{"type":1,"target":"x","arguments":[],"streamIds":"s"}', "Property 'streamIds' has the wrong type."),
        ('{"type":1,"target":"x","arguments":[],"streamIds":[1]}', "Property 'streamIds' must be a list of strings."),
        ('{"type":1,"target":"x","arguments":[],"headers":[]}', "Property 'headers' must be an object."),
        ('{"type":1,"target":"x","arguments":[],"headers":"h"}', "Property 'headers' must be an object."),
        ('{"type":2,"item":1}', "Missing required property 'invocationId'."),
        ('{"type":2,"invocationId":"1"}', "Missing required property 'item'."),
        ('{"type":3}', "Missing required property 'invocationId'."),
        ('{"type":3,"invocationId":1}', "Property 'invocationId' has the wrong type."),
        ('{"type":3,"invocationId":"1","error":5}', "Property 'error' has the wrong type."),
        (
            '{"type":3,"invocationId":"1","result":1,"error":"e"}',
            "The 'error' and 'result' properties are mutually exclusive.",
        ),
        ('{"type":4,"target":"x","arguments":[]}', "Missing required property 'invocationId'."),
        ('{"type":4,"invocationId":"1","arguments":[]}', "Missing required property 'target'."),
        ('{"type":5}', "Missing required property 'invocationId'."),
        ('{"type":7,"error":1}', "Property 'error' has the wrong type."),
        ('{"type":7,"allowReconnect":"yes"}', "Property 'allowReconnect' has the wrong type."),
        ('{"type":7,"allowReconnect":1}', "Property 'allowReconnect' has the wrong type."),
        ('{"type":8}', "Missing required property 'sequenceId'."),
        ('{"type":8,"sequenceId":"1"}', "Property 'sequenceId' has the wrong type."),
        ('{"type":9,"sequenceId":true}', "Property 'sequenceId' has the wrong type."),
        ('{"type":9,"sequenceId":1.5}', "Property 'sequenceId' has the wrong type."),
    ],
)
def test_parse_message_wrong_fields(record, error):
    with pytest.raises(ProtocolError) as info:
        parse_message(record)
    assert str(info.value) == error


def test_invocation_id_length_limit():
    def record(invocation_id: str) -> str:
        return json.dumps({"type": 1, "invocationId": invocation_id, "target": "x", "arguments": []})

    assert parse_message(record("a" * 256)) == InvocationMessage(target="x", arguments=[], invocation_id="a" * 256)
    for kind in (1, 2, 3, 4, 5):
        message: dict[str, object] = {
            "type": kind,
            "invocationId": "a" * 257,
            "target": "x",
            "arguments": [],
            "item": 1,
        }
        with pytest.raises(ProtocolError) as info:
            parse_message(json.dumps(message))
        assert str(info.value) == "Invocation ID is longer than 256 characters."


# --------------------------------------------------------------------------- JSON hazards

HAZARDS = [
    pytest.param("[" * 20000, "The message is nested too deeply.", id="deep-array-unterminated"),
    pytest.param("[" * 20000 + "]" * 20000, "The message is nested too deeply.", id="deep-array"),
    pytest.param('{"a":' * 20000 + "1" + "}" * 20000, "The message is nested too deeply.", id="deep-object"),
    pytest.param(
        '{"type":1,"target":"Echo","arguments":[' + "9" * 5000 + "]}",
        "Error reading JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits;"
        " use sys.set_int_max_str_digits() to increase the limit",
        id="5000-digit-int",
    ),
    pytest.param('{"type":1,"target":"Echo","arguments":[NaN]}', "Error reading JSON: NaN is not valid JSON", id="NaN"),
    pytest.param(
        '{"type":1,"target":"Echo","arguments":[Infinity]}',
        "Error reading JSON: Infinity is not valid JSON",
        id="Infinity",
    ),
    pytest.param(
        '{"type":1,"target":"Echo","arguments":[-Infinity]}',
        "Error reading JSON: -Infinity is not valid JSON",
        id="-Infinity",
    ),
    pytest.param(
        '{"type":1,"target":"Echo","arguments":[1e400]}',
        "Error reading JSON: A number is out of the range of a double.",
        id="float-overflow",
    ),
    pytest.param(
        '{"type":1,"target":"Echo","arguments":[-1e400]}',
        "Error reading JSON: A number is out of the range of a double.",
        id="negative-float-overflow",
    ),
    pytest.param('{"type":1,"type":6}', "Error reading JSON: duplicate keys in a JSON object", id="duplicate-type"),
    pytest.param(
        '{"type":1,"target":"Echo","arguments":[{"k":1,"k":2}]}',
        "Error reading JSON: duplicate keys in a JSON object",
        id="duplicate-nested",
    ),
    pytest.param(
        '\ufeff{"type":6}',
        "Error reading JSON: Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 (char 0)",
        id="BOM",
    ),
    pytest.param(
        '{"type":1,"target":"Echo","arguments":["\\ud800"]}',
        "Error reading JSON: 'utf-8' codec can't encode character '\\ud800' in position 0: surrogates not allowed",
        id="lone-high-surrogate",
    ),
    pytest.param(
        '{"type":1,"target":"Echo","arguments":["x\\uDC00"]}',
        "Error reading JSON: 'utf-8' codec can't encode character '\\udc00' in position 1: surrogates not allowed",
        id="lone-low-surrogate",
    ),
    pytest.param(
        '{"type":1,"target":"Echo","arguments":[{"\\ud800":1}]}',
        "Error reading JSON: 'utf-8' codec can't encode character '\\ud800' in position 0: surrogates not allowed",
        id="lone-surrogate-key",
    ),
    pytest.param(
        '{"type":1,"target":"Echo\\ud800","arguments":[]}',
        "Error reading JSON: 'utf-8' codec can't encode character '\\ud800' in position 4: surrogates not allowed",
        id="lone-surrogate-target",
    ),
    pytest.param(
        '{"type":1,',
        "Error reading JSON: Expecting property name enclosed in double quotes: line 1 column 11 (char 10)",
        id="truncated",
    ),
    pytest.param(
        '{"type":6} {"type":6}', "Error reading JSON: Extra data: line 1 column 12 (char 11)", id="two-values"
    ),
    pytest.param("", "Error reading JSON: Expecting value: line 1 column 1 (char 0)", id="empty"),
]


@pytest.mark.parametrize(("record", "error"), HAZARDS)
def test_hazards_raise_protocol_error_only(record, error):
    with pytest.raises(ProtocolError) as info:
        parse_message(record)
    assert type(info.value) is ProtocolError
    assert str(info.value) == error


@pytest.mark.parametrize(("record", "error"), HAZARDS)
def test_loads_strict_hazards(record, error):
    with pytest.raises(ProtocolError) as info:
        loads_strict(record)
    assert str(info.value) == error


def test_valid_surrogate_pair_and_escaped_backslash_are_accepted():
    assert parse_message('{"type":1,"target":"Echo","arguments":["\\ud83d\\ude00"]}') == InvocationMessage(
        target="Echo", arguments=["😀"]
    )
    # An escaped backslash followed by "ud800" is plain text, not a surrogate.
    assert parse_message('{"type":1,"target":"Echo","arguments":["\\\\ud800"]}') == InvocationMessage(
        target="Echo", arguments=["\\ud800"]
    )


def test_large_but_valid_numbers_are_accepted():
    big = int("9" * 4300)
    assert loads_strict("[" + "9" * 4300 + ", 1e308, -1.5e-300]") == [big, 1e308, -1.5e-300]


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param({"a": [float("-inf")]}, id="nested-inf"),
        pytest.param(object(), id="object"),
        pytest.param({1, 2}, id="set"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param({"x": "\ud800"}, id="lone-surrogate"),
    ],
)
def test_encode_json_refuses(value):
    with pytest.raises(PayloadError) as info:
        encode_json(value)
    assert str(info.value).startswith("Cannot encode as JSON: ")


def test_encode_json_is_compact_and_keeps_unicode():
    assert encode_json({"a": [1, "é", None, True]}) == '{"a":[1,"é",null,true]}'
    assert encode_json([datetime.date(2024, 1, 2), decimal.Decimal("1.5"), "\u2028"]) == '["2024-01-02","1.5","\u2028"]'


def test_writers():
    assert (
        write_invocation("Receive", ("group", "hi")) == '{"type":1,"target":"Receive","arguments":["group","hi"]}' + RS
    )
    assert write_completion("1") == '{"type":3,"invocationId":"1"}' + RS
    assert write_completion("1", result=None, has_result=True) == '{"type":3,"invocationId":"1","result":null}' + RS
    assert write_completion("1", error="e") == '{"type":3,"invocationId":"1","error":"e"}' + RS
    assert write_close() == '{"type":7}' + RS
    assert write_close("x", True) == '{"type":7,"error":"x","allowReconnect":true}' + RS
    with pytest.raises(PayloadError):
        write_invocation("Receive", (float("nan"),))


# --------------------------------------------------------------------------- handshake


@pytest.mark.parametrize("version", [0, 1, 2])
def test_handshake_json_versions_accepted(version):
    assert parse_handshake(json.dumps({"protocol": "json", "version": version})) == HandshakeRequest("json", version)


@pytest.mark.parametrize("protocol", ["JSON", "Json", "jSoN"])
def test_handshake_protocol_is_case_insensitive(protocol):
    assert parse_handshake(json.dumps({"protocol": protocol, "version": 1})) == HandshakeRequest("json", 1)


def test_handshake_ignores_extra_properties():
    assert parse_handshake('{"protocol":"json","version":1,"extra":[1]}') == HandshakeRequest("json", 1)


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ('{"protocol":"json","version":3}', "The server does not support version 3 of the 'json' protocol."),
        ('{"protocol":"json","version":-1}', "The server does not support version -1 of the 'json' protocol."),
        ('{"protocol":"messagepack","version":1}', "The protocol 'messagepack' is not supported."),
        ('{"protocol":"","version":1}', "The protocol '' is not supported."),
        (
            "[]",
            "An unexpected error occurred during connection handshake. The handshake must be a JSON object.",
        ),
        (
            '"json"',
            "An unexpected error occurred during connection handshake. The handshake must be a JSON object.",
        ),
        (
            '{"version":1}',
            "An unexpected error occurred during connection handshake. Missing required property 'protocol'.",
        ),
        (
            '{"protocol":1,"version":1}',
            "An unexpected error occurred during connection handshake. Missing required property 'protocol'.",
        ),
        (
            '{"protocol":"json"}',
            "An unexpected error occurred during connection handshake. Missing required property 'version'.",
        ),
        (
            '{"protocol":"json","version":"1"}',
            "An unexpected error occurred during connection handshake. Missing required property 'version'.",
        ),
        (
            '{"protocol":"json","version":true}',
            "An unexpected error occurred during connection handshake. Missing required property 'version'.",
        ),
        (
            '{"protocol":"json","version":1.0}',
            "An unexpected error occurred during connection handshake. Missing required property 'version'.",
        ),
        (
            '{"type":1,"target":"Echo","arguments":[]}',
            "An unexpected error occurred during connection handshake. Missing required property 'protocol'.",
        ),
        (
            '{"protocol":"json",',
            "An unexpected error occurred during connection handshake. Error reading JSON: Expecting property name "
            "enclosed in double quotes: line 1 column 20 (char 19)",
        ),
        (
            '{"protocol":"json","protocol":"json","version":1}',
            "An unexpected error occurred during connection handshake. Error reading JSON: duplicate keys in a JSON object",
        ),
        (
            "[" * 20000,
            "An unexpected error occurred during connection handshake. The message is nested too deeply.",
        ),
    ],
)
def test_handshake_errors(record, error):
    with pytest.raises(HandshakeError) as info:
        parse_handshake(record)
    assert str(info.value) == error


def test_handshake_responses():
    assert HANDSHAKE_OK == "{}" + RS
    assert (
        write_handshake_error("The protocol 'x' is not supported.")
        == '{"error":"The protocol \'x\' is not supported."}' + RS
    )
