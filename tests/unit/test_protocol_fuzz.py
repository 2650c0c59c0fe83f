"""Property tests of the JSON hub protocol's reader: only a protocol error escapes, memory stays bounded,
and a record split at any character reads the same as whole."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalr_groups.exceptions import HandshakeError, ProtocolError
from signalr_groups.protocol.handshake import parse_handshake
from signalr_groups.protocol.json import RECORD_SEPARATOR, RecordReader, parse_message

LIMIT = 2048
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
#: Records shaped like hub messages: a type (often valid), the fields the spec names, and junk.
message_dicts = st.fixed_dictionaries(
    {"type": st.one_of(st.integers(min_value=-2, max_value=10), json_values)},
    optional={
        "invocationId": json_values,
        "target": json_values,
        "arguments": json_values,
        "streamIds": json_values,
        "result": json_values,
        "error": json_values,
        "item": json_values,
        "headers": json_values,
        "allowReconnect": json_values,
        "sequenceId": json_values,
    },
)


def _only_protocol_errors(record: str) -> None:
    with contextlib.suppress(ProtocolError):
        parse_message(record)


@FUZZ
@given(st.text(max_size=300))
def test_any_text_gives_a_message_or_a_protocol_error(record: str) -> None:
    _only_protocol_errors(record)


@FUZZ
@given(message_dicts)
def test_any_message_shaped_record_gives_a_message_or_a_protocol_error(message: dict[str, Any]) -> None:
    _only_protocol_errors(json.dumps(message, allow_nan=True))


@FUZZ
@given(st.one_of(st.text(max_size=200), st.dictionaries(st.text(max_size=10), json_values).map(json.dumps)))
def test_any_handshake_gives_a_request_or_a_handshake_error(record: str) -> None:
    with contextlib.suppress(HandshakeError):
        parse_handshake(record)


records = st.lists(st.text(alphabet=st.characters(blacklist_characters=RECORD_SEPARATOR), max_size=200), max_size=8)


@FUZZ
@given(records, st.lists(st.integers(min_value=0, max_value=2000), max_size=10))
def test_records_split_at_any_character_read_the_same(items: list[str], cuts: list[int]) -> None:
    stream = "".join(item + RECORD_SEPARATOR for item in items)
    whole, error = RecordReader(LIMIT).feed(stream)
    assert error is None and whole == items
    reader = RecordReader(LIMIT)
    got: list[str] = []
    start = 0
    for cut in sorted({min(cut, len(stream)) for cut in cuts}) + [len(stream)]:
        chunk, error = reader.feed(stream[start:cut])
        assert error is None
        got.extend(chunk)
        start = cut
    assert got == items and reader.pending_chars == 0


@FUZZ
@given(st.lists(st.text(max_size=3000), max_size=12))
def test_memory_held_for_an_unfinished_record_is_bounded(frames: list[str]) -> None:
    """Whatever arrives, the reader holds at most MAX_MESSAGE_SIZE of an unfinished record; a bigger one is an error."""
    reader = RecordReader(LIMIT)
    for frame in frames:
        complete, error = reader.feed(frame)
        assert reader.pending_chars <= LIMIT
        assert all(len(record.encode("utf-8", "surrogatepass")) <= LIMIT for record in complete)
        if error is not None:
            assert isinstance(error, ProtocolError)
            reader = RecordReader(LIMIT)  # the connection is closed; a new one starts afresh
