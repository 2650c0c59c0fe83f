import contextlib, tracemalloc, threading, gc
from hypothesis import given, settings
from signalr_groups.exceptions import ProtocolError
from signalr_groups.protocol.messagepack import MessagePackReader, parse_message, _scan, _unpack
import tests.unit.test_protocol_messagepack as T

seen = []

def run(data):
    gc.disable()
    tracemalloc.start(40)
    steps = []
    tracemalloc.reset_peak()
    reader = MessagePackReader(4096)
    bodies, error = reader.feed(data)
    steps.append(("feed", tracemalloc.get_traced_memory()[1]))
    for b in bodies:
        tracemalloc.reset_peak()
        try:
            _scan(b)
        except ProtocolError as e:
            steps.append(("scanerr", repr(e)))
        steps.append(("scan", tracemalloc.get_traced_memory()[1]))
        tracemalloc.reset_peak()
        with contextlib.suppress(ProtocolError):
            _unpack(b)
        steps.append(("unpack", tracemalloc.get_traced_memory()[1]))
        tracemalloc.reset_peak()
        with contextlib.suppress(ProtocolError):
            parse_message(b)
        steps.append(("parse", tracemalloc.get_traced_memory()[1]))
    tracemalloc.stop()
    gc.enable()
    return steps

@settings(max_examples=500, deadline=None, database=None)
@given(T.message_values)
def test_x(v):
    data = T.frame(T.pack(v))
    steps = run(data)
    if any(isinstance(s[1], int) and s[1] > 500000 for s in steps):
        seen.append((steps, run(data), data))
    assert not seen, seen
