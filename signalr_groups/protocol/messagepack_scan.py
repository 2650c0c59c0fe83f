"""The MessagePack reader's first pass: one walk over a message's bytes that allocates nothing.

``msgpack`` builds a full-size list as soon as it reads an array header, so a small body that
declares huge or deeply nested containers would allocate before any limit applied. :func:`scan`
checks the bytes first — truncation, trailing bytes, nesting, declared sizes against the bytes
actually there, string map keys, the timestamp extension only — and only then does
:mod:`signalr_groups.protocol.messagepack` let ``msgpack`` decode them.
"""

from __future__ import annotations

from typing import Final

from signalr_groups.exceptions import ProtocolError

#: The MessagePack extension type of timestamps, and the sizes a timestamp may have.
TIMESTAMP_EXT: Final = -1
TIMESTAMP_SIZES: Final = frozenset({4, 8, 12})

# How the scanner treats each first byte: (kind, argument).
_SKIP: Final = 0  # nil, booleans, numbers, fixstr: argument bytes follow
_SKIP_VAR: Final = 1  # str8/16/32, bin8/16/32: a length of argument bytes, then that many bytes
_ARRAY: Final = 2  # fixarray of argument elements
_ARRAY_VAR: Final = 3  # array16/32: a count of argument bytes
_MAP: Final = 4  # fixmap of argument pairs
_MAP_VAR: Final = 5  # map16/32: a count of argument bytes
_EXT: Final = 6  # fixext: a type byte, then argument bytes
_EXT_VAR: Final = 7  # ext8/16/32: a length of argument bytes, a type byte, then the data
_INVALID: Final = 8  # 0xC1, never used

_FORMATS_C0_DF: Final = (
    (_SKIP, 0),  # c0 nil
    (_INVALID, 0),  # c1 never used
    (_SKIP, 0),  # c2 false
    (_SKIP, 0),  # c3 true
    (_SKIP_VAR, 1),  # c4 bin8
    (_SKIP_VAR, 2),  # c5 bin16
    (_SKIP_VAR, 4),  # c6 bin32
    (_EXT_VAR, 1),  # c7 ext8
    (_EXT_VAR, 2),  # c8 ext16
    (_EXT_VAR, 4),  # c9 ext32
    (_SKIP, 4),  # ca float32
    (_SKIP, 8),  # cb float64
    (_SKIP, 1),  # cc uint8
    (_SKIP, 2),  # cd uint16
    (_SKIP, 4),  # ce uint32
    (_SKIP, 8),  # cf uint64
    (_SKIP, 1),  # d0 int8
    (_SKIP, 2),  # d1 int16
    (_SKIP, 4),  # d2 int32
    (_SKIP, 8),  # d3 int64
    (_EXT, 1),  # d4 fixext1
    (_EXT, 2),  # d5 fixext2
    (_EXT, 4),  # d6 fixext4
    (_EXT, 8),  # d7 fixext8
    (_EXT, 16),  # d8 fixext16
    (_SKIP_VAR, 1),  # d9 str8
    (_SKIP_VAR, 2),  # da str16
    (_SKIP_VAR, 4),  # db str32
    (_ARRAY_VAR, 2),  # dc array16
    (_ARRAY_VAR, 4),  # dd array32
    (_MAP_VAR, 2),  # de map16
    (_MAP_VAR, 4),  # df map32
)


def _format_table() -> tuple[tuple[int, int], ...]:
    table: list[tuple[int, int]] = []
    for byte in range(256):
        if byte <= 0x7F or byte >= 0xE0:  # positive and negative fixint
            table.append((_SKIP, 0))
        elif byte <= 0x8F:
            table.append((_MAP, byte & 0x0F))
        elif byte <= 0x9F:
            table.append((_ARRAY, byte & 0x0F))
        elif byte <= 0xBF:
            table.append((_SKIP, byte & 0x1F))  # fixstr
        else:
            table.append(_FORMATS_C0_DF[byte - 0xC0])
    return tuple(table)


_FORMATS: Final = _format_table()
#: First bytes of a MessagePack string (fixstr, str8, str16, str32): the only map keys accepted.
_STRING_BYTES: Final = frozenset([*range(0xA0, 0xC0), 0xD9, 0xDA, 0xDB])

_TRUNCATED: Final = "Error reading MessagePack: the message is truncated."


def scan(body: bytes, max_depth: int) -> None:
    """Check that ``body`` is exactly one complete MessagePack value fit to unpack, allocating nothing.

    Refuses truncation, trailing bytes, the unused byte 0xC1, nesting deeper than ``max_depth``, map keys
    that are not strings, extension types other than timestamps, and containers declaring more elements than
    the bytes left could hold. Raises :class:`ProtocolError`.
    """
    end = len(body)
    pos = 0
    parents: list[int] = []  # items still expected by each enclosing container
    parent_maps: list[bool] = []
    remaining = 1  # items still expected by the innermost open container (1 at the top: the message)
    in_map = False
    while True:
        if pos >= end:
            raise ProtocolError(_TRUNCATED)
        byte = body[pos]
        if in_map and not remaining & 1 and byte not in _STRING_BYTES:
            raise ProtocolError("Error reading MessagePack: map keys must be strings.")
        kind, argument = _FORMATS[byte]
        pos += 1
        if kind == _SKIP:
            pos += argument
        elif kind == _SKIP_VAR:
            pos += argument + int.from_bytes(body[pos : pos + argument], "big")
        elif kind == _INVALID:
            raise ProtocolError("Error reading MessagePack: the byte 0xc1 is not a valid format.")
        elif kind >= _EXT:
            size = argument
            if kind == _EXT_VAR:
                size = int.from_bytes(body[pos : pos + argument], "big")
                pos += argument
            if pos >= end:
                raise ProtocolError(_TRUNCATED)
            ext_type = int.from_bytes(body[pos : pos + 1], "big", signed=True)
            if ext_type != TIMESTAMP_EXT:
                raise ProtocolError(f"Error reading MessagePack: extension type {ext_type} is not supported.")
            if size not in TIMESTAMP_SIZES:
                raise ProtocolError("Error reading MessagePack: a timestamp must be 4, 8 or 12 bytes long.")
            pos += 1 + size
        else:  # an array or a map
            count = argument
            if kind in (_ARRAY_VAR, _MAP_VAR):
                count = int.from_bytes(body[pos : pos + argument], "big")
                pos += argument
            is_map = kind in (_MAP, _MAP_VAR)
            if is_map:
                count *= 2
            if len(parents) >= max_depth:
                raise ProtocolError("The message is nested too deeply.")
            if count > end - pos:  # each element takes at least one byte
                raise ProtocolError(_TRUNCATED)
            if count:
                parents.append(remaining)
                parent_maps.append(in_map)
                remaining = count
                in_map = is_map
                continue
        # One item is complete.
        if pos > end:
            raise ProtocolError(_TRUNCATED)
        remaining -= 1
        while not remaining:
            if not parents:
                if pos != end:
                    raise ProtocolError("Error reading MessagePack: there are bytes after the message.")
                return
            remaining = parents.pop() - 1
            in_map = parent_maps.pop()
