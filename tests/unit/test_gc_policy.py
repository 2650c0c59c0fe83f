"""GC_FREEZE_CONNECTIONS: the heartbeat's freeze after a wave of connections, and the setting's validation."""

from __future__ import annotations

import gc

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from signalr_groups.conf import get_hub_settings
from signalr_groups.lifetime import gc_policy


@pytest.fixture(autouse=True)
def _fresh_policy():
    gc_policy._state.update(opened=0, freezes=0, warned=0)
    yield
    gc.unfreeze()  # (this test process must not keep what a test froze)
    gc_policy._state.update(opened=0, freezes=0, warned=0)


def test_off_by_default_never_freezes():
    assert get_hub_settings().gc_freeze_connections is None
    for _ in range(5000):
        gc_policy.connection_opened()
    assert not gc_policy.maybe_freeze(None)
    assert gc.get_freeze_count() == 0


def test_freezes_once_the_threshold_of_new_connections_is_reached_then_counts_again():
    for _ in range(2):
        gc_policy.connection_opened()
    assert not gc_policy.maybe_freeze(30)
    assert gc.get_freeze_count() == 0
    for _ in range(28):
        gc_policy.connection_opened()
    assert gc_policy.maybe_freeze(30)
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # everything alive (the test process's modules, at least) is frozen
    assert not gc_policy.maybe_freeze(30)  # counting starts again from zero
    assert gc_policy._state["freezes"] == 1


def test_the_end_of_a_wave_freezes_a_tenth_of_the_threshold():
    for _ in range(150):
        gc_policy.connection_opened()
    assert not gc_policy.maybe_freeze(1000)  # still coming in
    assert gc_policy.maybe_freeze(1000)  # none since the previous heartbeat: the wave is over
    for _ in range(50):
        gc_policy.connection_opened()
    assert not gc_policy.maybe_freeze(1000)
    assert not gc_policy.maybe_freeze(1000)  # over too, but under a tenth: left to the collector


def test_the_youngest_generations_cyclic_garbage_is_collected_rather_than_frozen():
    class Node:
        pass

    gc.collect()
    gc.disable()  # (so that the cycle is still in generation 0 when the freeze comes)
    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    del a, b  # a cycle: garbage only the collector frees
    for _ in range(1):
        gc_policy.connection_opened()
    try:
        assert gc_policy.maybe_freeze(1)
    finally:
        gc.enable()
    gc.unfreeze()
    assert not [obj for obj in gc.get_objects() if type(obj).__name__ == "Node"]


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "1000"])
def test_the_setting_must_be_none_or_a_positive_integer(value):
    with override_settings(SIGNALR_GROUPS={"GC_FREEZE_CONNECTIONS": value}), pytest.raises(ImproperlyConfigured):
        get_hub_settings()


def test_the_setting_accepts_a_positive_integer():
    with override_settings(SIGNALR_GROUPS={"GC_FREEZE_CONNECTIONS": 1000}):
        assert get_hub_settings().gc_freeze_connections == 1000


def test_a_server_not_known_to_free_closed_connections_gets_one_warning_when_freezing(caplog):
    class StockProtocol:
        pass

    gc_policy.check_server(StockProtocol(), None)  # freezing off: nothing to say

    class LeanProtocol:  # as signalr_groups.server.uvicorn_ws's (checked in tests/interop/test_uvicorn_ws_protocol.py)
        frees_closed_connections = True

    gc_policy.check_server(LeanProtocol(), 1000)
    assert not caplog.records
    gc_policy.check_server(StockProtocol(), 1000)
    gc_policy.check_server(StockProtocol(), 1000)
    warnings = [record for record in caplog.records if "GC_FREEZE_CONNECTIONS" in record.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    assert "StockProtocol" in warnings[0].getMessage()
    assert "signalr_groups.server.uvicorn_ws:SignalRWebSocketProtocol" in warnings[0].getMessage()
