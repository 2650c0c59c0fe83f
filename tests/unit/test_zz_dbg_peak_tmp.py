import contextlib, tracemalloc, threading, gc
from hypothesis import given, settings
from signalr_groups.exceptions import ProtocolError
from signalr_groups.protocol.messagepack import MessagePackReader, parse_message
import tests.unit.test_protocol_messagepack as T

seen = []
gcs = []
gc.callbacks.append(lambda phase, info: gcs.append((phase, info)))

def run(data):
    gcs.clear()
    tracemalloc.start(40)
    tracemalloc.reset_peak()
    reader = MessagePackReader(4096)
    bodies, error = reader.feed(data)
    for b in bodies:
        with contextlib.suppress(ProtocolError):
            parse_message(b)
    p = tracemalloc.get_traced_memory()[1]
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return p, list(gcs), snap

@settings(max_examples=300, deadline=None, database=None)
@given(T.message_values)
def test_x(v):
    data = T.frame(T.pack(v))
    p, g, snap = run(data)
    if p > 500000:
        seen.append((p, g, [t.name for t in threading.enumerate()], [str(s) for s in snap.statistics('lineno')[:5]]))
    assert not seen, seen
