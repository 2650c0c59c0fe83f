"""The issue's targets, computed as ratios from one run, and the smoke checks of ``--quick``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

HUBS = ("hub-uvicorn", "hub-daphne")


def _steps(scenarios: dict[str, Any], name: str, impl: str) -> list[dict[str, Any]]:
    return list(scenarios.get(name, {}).get(impl, {}).get("steps", []))


def _at(steps: list[dict[str, Any]], rate: float, **label: Any) -> dict[str, Any] | None:
    for step in steps:
        if step["offered_per_s"] == rate and all(step.get(key) == value for key, value in label.items()):
            return step
    return None


def _cpu(step: dict[str, Any] | None) -> float | None:
    return None if step is None else step.get("server_cpu_us_per_delivery")


def _net_cpu(step: dict[str, Any] | None) -> float | None:
    """CPU per delivery net of the server's background (steps measured with ``Bench.step(background=...)``)."""
    return None if step is None else step.get("server_cpu_us_per_delivery_net")


def _geomean(values: list[float]) -> float | None:
    values = [value for value in values if value > 0]
    return math.exp(sum(math.log(value) for value in values) / len(values)) if values else None


def _cpu_ratio(scenarios: dict[str, Any], name: str, impl: str, baseline: str) -> float | None:
    """Baseline over impl server CPU per delivery, summed over the steps both ran unsaturated (1 s ticks add up)."""
    ours_cpu = ours_n = theirs_cpu = theirs_n = 0.0
    ours = _steps(scenarios, name, impl)
    for theirs in _steps(scenarios, name, baseline):
        label = {key: theirs[key] for key in ("group_size", "devices") if key in theirs}
        mine = _at(ours, theirs["offered_per_s"], **label)
        if mine is None or mine.get("saturated") or theirs.get("saturated") or not _cpu(mine) or not _cpu(theirs):
            continue
        ours_cpu += (_cpu(mine) or 0) * mine["delivered"]
        ours_n += mine["delivered"]
        theirs_cpu += (_cpu(theirs) or 0) * theirs["delivered"]
        theirs_n += theirs["delivered"]
    if not ours_n or not theirs_n or not ours_cpu:
        return None
    return (theirs_cpu / theirs_n) / (ours_cpu / ours_n)


def evaluate(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target, per hub server: name, value, holds, detail."""
    targets: list[dict[str, Any]] = []

    def add(name: str, value: float | None, holds: bool, detail: str) -> None:
        targets.append(
            {"name": name, "value": None if value is None else round(value, 2), "holds": holds, "detail": detail}
        )

    for name in ("echo", "broadcast", "groups"):
        cost = _cpu_ratio(scenarios, name, "hub-uvicorn-nometrics", "hub-uvicorn")
        add(
            f"hub-uvicorn: server CPU per delivery with metrics on vs off ({name})",
            cost,
            cost is not None and cost <= 1.10,
            "<= 1.10x: Prometheus metrics (METRICS, on by default) add at most 10% on the hot path; same run",
        )
    raw = _steps(scenarios, "broadcast", "raw_ws")
    for hub in HUBS:
        ours = _steps(scenarios, "broadcast", hub)
        pairs = [(s, _at(raw, s["offered_per_s"])) for s in ours if not s.get("saturated")]
        ratios = [(_cpu(a) or 0) / (_cpu(b) or 1) for a, b in pairs if b is not None and _cpu(a) and _cpu(b)]
        value = _geomean(ratios)
        add(
            f"{hub}: server CPU per delivery vs raw websockets (broadcast, 1,000 conns)",
            value,
            value is not None and value <= 3.0,
            f"<= 3x; geometric mean over {len(ratios)} matched steps",
        )
    channels = scenarios.get("groups", {}).get("channels-daphne", {}).get("max_1000")
    for hub in HUBS:
        top = scenarios.get("groups", {}).get(hub, {}).get("max_1000")
        value = (
            top["delivered_per_s"] / channels["delivered_per_s"]
            if top and channels and channels["delivered_per_s"]
            else None
        )
        bound = " (ours client-bound: a lower bound)" if top and top.get("client_bound") else ""
        add(
            f"{hub}: delivered msgs/s vs plain Channels consumer, 1,000-member group",
            value,
            value is not None and value >= 10,
            f">= 10x; {top['delivered_per_s'] if top else '?'} vs {channels['delivered_per_s'] if channels else '?'} /s{bound}",
        )
    for hub in HUBS:
        worst: list[str] = []
        values = []
        for name in ("echo", "broadcast", "groups", "users", "churn"):
            value = _cpu_ratio(scenarios, name, hub, "socketio")
            if value is not None:
                values.append(value)
                if value < 1:
                    worst.append(f"{name} {value:.2f}")
        idle_ours = _idle(scenarios, hub)
        idle_sio = _idle(scenarios, "socketio")
        if idle_ours and idle_sio:
            for key, label in (("kib_per_conn", "idle memory"), ("idle_cpu_percent_of_core", "idle CPU")):
                value = idle_sio[key] / max(0.01, idle_ours[key])
                values.append(value)
                if value < 1:
                    worst.append(f"{label} {value:.2f}")
        same = " (same ASGI server as python-socketio)" if hub == "hub-uvicorn" else " (information: daphne vs uvicorn)"
        add(
            f"{hub}: no worse than python-socketio, per scenario{same}",
            min(values) if values else None,
            bool(values) and not worst,
            "min over echo, broadcast, groups, users, churn (socketio CPU/delivery over ours) and idle memory, idle CPU (>= 1)"
            + (f"; below 1: {', '.join(worst)}" if worst else ""),
        )
    for hub in HUBS:
        steps = {s["group_size"]: s for s in _steps(scenarios, "groups", hub)}
        small, big = steps.get(100), steps.get(max(steps) if steps else 0)
        value = (_cpu(big) or 0) / (_cpu(small) or 1) if small and big and big is not small else None
        add(
            f"{hub}: cost linear in group size (CPU per delivery at {max(steps) if steps else '?'} / at 100 members)",
            value,
            value is not None and value <= 2.0,
            "<= 2 (a quadratic cost would grow 40x from 100 to 4,000); "
            + ", ".join(f"{size}: {_cpu(s)} us" for size, s in sorted(steps.items())),
        )
    for hub in HUBS:
        plateau = _idle(scenarios, hub)
        add(
            f"{hub}: 10,000 idle connections: KiB per connection",
            plateau["kib_per_conn"] if plateau else None,
            plateau is not None and plateau["kib_per_conn"] < 30,
            f"< 30 KiB; {plateau['connections'] if plateau else '?'} connections",
        )
        add(
            f"{hub}: 10,000 idle connections: % of a core",
            plateau["idle_cpu_percent_of_core"] if plateau else None,
            plateau is not None and plateau["idle_cpu_percent_of_core"] < 5,
            "< 5%",
        )
    for hub in HUBS:
        step = _at(_steps(scenarios, "users", hub), 500, devices=5)
        value = step["fanout_ms"]["p99"] if step else None
        add(
            f"{hub}: user send to 5 devices at 500 user-sends/s, p99 to the last device (ms)",
            value,
            value is not None and value < 20 and step is not None and step["ratio"] == 1,
            "< 20 ms" + (f"; delivery ratio {step['ratio']}" if step else ""),
        )
    revocation = scenarios.get("revocation")
    value = revocation.get("ms_p99") if revocation else None
    add(
        "revocation reaching the last of 5 devices, p99 (ms, hub on daphne)",
        value,
        value is not None and value < 100,
        f"< 100 ms; {revocation.get('rounds') if revocation else '?'} rounds",
    )
    _issue15(scenarios, add)
    return targets


def _issue15(scenarios: dict[str, Any], add: Callable[[str, float | None, bool, str], None]) -> None:
    """Issue 15's targets for the deployed server (hub-uvicorn-lean: the lean protocol and GC_FREEZE_CONNECTIONS,
    as deploy/ runs it) and for stock hub-uvicorn; node-ws and raw_ws-keepalive only when they ran."""
    ran = [impl for impl in DEPLOYED if any(impl in scenarios.get(name, {}) for name in ("groups", "steady", "idle"))]
    for impl in ran:
        _issue15_for(impl, scenarios, add)
    by_size = {
        impl: {s["group_size"]: s for s in _steps(scenarios, "groups", impl) if "group_size" in s}
        for impl in ("hub-daphne", *ran)
    }
    reference = next((impl for impl in ran if by_size[impl]), None)
    if reference is None:
        return
    daphne, hub = by_size["hub-daphne"], by_size[reference]
    ratios = {
        size: (_cpu(daphne.get(size)) or 0) / (_cpu(hub.get(size)) or 1)
        for size in (1000, 4000)
        if _cpu(daphne.get(size)) and _cpu(hub.get(size))
    }
    add(
        f"hub-daphne: server CPU per delivery vs {reference} (groups; information)",
        max(ratios.values()) if ratios else None,
        bool(ratios) and max(ratios.values()) <= 2,
        "<= 2x (the worse of 1,000 and 4,000 members); "
        + ", ".join(f"{size:,}: {value:.2f}x" for size, value in ratios.items()),
    )


#: The uvicorn deployments the issue 15 targets are computed for: the recommended one first.
DEPLOYED = ("hub-uvicorn-lean", "hub-uvicorn")


def _issue15_for(impl: str, scenarios: dict[str, Any], add: Callable[[str, float | None, bool, str], None]) -> None:
    by_size = {
        name: {s["group_size"]: s for s in _steps(scenarios, "groups", name) if "group_size" in s}
        for name in (impl, "raw_ws", "node-ws")
    }
    hub = by_size[impl]
    for size in (1000, 4000) if hub else ():
        for baseline, bound in (("raw_ws", 1.3), ("node-ws", 1.5)):
            if baseline not in scenarios.get("groups", {}):
                continue
            mine, theirs = hub.get(size), by_size[baseline].get(size)
            for figure, name, detail in (
                (_net_cpu, f"server CPU per delivery vs {baseline}, {size:,}-member group (groups)",
                 f"<= {bound}x; net of each server's background CPU (one record per frame, same run)"),
                (_cpu, "the same, background included (information)",
                 "with what the idle connections cost meanwhile (every server pings each one every 15 s, and reads "
                 "the clients' pings)"),
            ):  # fmt: skip
                ours, others = figure(mine), figure(theirs)
                value = ours / others if ours and others else None
                add(f"{impl}: {name}", value, value is not None and value <= bound, f"{ours} vs {others} us; {detail}")
    steady = scenarios.get("steady", {}).get(impl)
    if steady:
        lag = steady.get("loop_lag")
        add(
            f"{impl}: worst event-loop stall, steady fan-out at 10,000 connections (ms)",
            lag["max_ms"] if lag else None,
            lag is not None and lag["max_ms"] <= 20,
            "<= 20 ms; "
            + (f"{lag['over_20ms']} stalls over 20 ms, {lag['over_10ms']} over 10 ms" if lag else "no probe")
            + f" in {steady['steps'][0]['sends']} sends to {steady['group_size']:,} members"
            + _stall_causes(steady.get("lag_events") or []),
        )
        objects = steady.get("objects")
        add(
            f"{impl}: GC-tracked objects left per closed connection, frozen ones included (steady)",
            objects["leak_per_conn"] if objects else None,
            objects is not None and objects["leak_per_conn"] < 1,
            "< 1; "
            + (
                f"{objects['before']:,} before connecting, {objects['after_close']:,} after {objects['closed']:,} closed"
                if objects
                else "no probe"
            ),
        )
    plateau = _idle(scenarios, impl)
    if plateau:
        add(
            f"{impl}: 10,000 idle connections: KiB per connection (issue 15)",
            plateau["kib_per_conn"],
            plateau["kib_per_conn"] <= 16,
            f"<= 16 KiB; {plateau['connections']} connections",
        )
        keepalive = _idle(scenarios, "raw_ws-keepalive")
        if keepalive:
            value = plateau["idle_cpu_percent_of_core"] / max(0.01, keepalive["idle_cpu_percent_of_core"])
            add(
                f"{impl}: idle CPU at 10,000 connections vs raw_ws-keepalive",
                value,
                value <= 1.5,
                f"<= 1.5x; {plateau['idle_cpu_percent_of_core']}% vs "
                f"{keepalive['idle_cpu_percent_of_core']}% of a core (SignalR keep-alive both)",
            )


def _idle(scenarios: dict[str, Any], impl: str) -> dict[str, Any] | None:
    plateaus = scenarios.get("idle", {}).get(impl, {}).get("plateaus", [])
    return dict(plateaus[-1]) if plateaus else None


def smoke_failures(scenarios: dict[str, Any], strict: bool) -> list[str]:
    """Broken scenarios: with ``strict`` (quick mode, low load) any delivery ratio below 1; always duplicates and bad membership."""
    problems: list[str] = []
    for name, impls in scenarios.items():
        if name == "revocation" or not isinstance(impls, dict):
            continue
        for impl, result in impls.items():
            steps = list(result.get("steps", [])) + list(
                result.get("joins", []) if isinstance(result.get("joins"), list) else []
            )
            if isinstance(result.get("joins"), dict):
                steps.append(result["joins"])
            for step in steps:
                if strict and step["ratio"] < 1:
                    problems.append(f"{name} {impl}: delivery ratio {step['ratio']} at {step['offered_per_s']}/s")
                if step.get("duplicates"):
                    problems.append(f"{name} {impl}: {step['duplicates']} duplicate deliveries")
                if strict and step.get("client_errors"):  # a failed POST or poll (HTTP transports)
                    problems.append(f"{name} {impl} {step.get('variant', '')}: client errors {step['client_errors']}")
            membership = result.get("membership")
            if membership is not None and not membership["ok"]:
                problems.append(f"{name} {impl}: final group membership wrong: {membership}")
            if name == "idle" and not result.get("plateaus"):
                problems.append(f"{name} {impl}: no plateau measured")
    return problems


def _stall_causes(events: list[list[float]]) -> str:
    """Which stalls were the loop thread's own work (CPU through at least half of it) and which were not.

    A stall with little CPU is time the thread was not running: another task on the server's core (on this
    VM, the kernel's ``kdamond`` thread, seen in the run queue's wait time), not the server's code.
    """
    timed = [(event[1], event[2]) for event in events if len(event) > 2]  # (runs before the CPU was recorded: none)
    if not timed:
        return ""
    working = max((lag for lag, cpu in timed if cpu >= lag / 2), default=0.0)
    idle = [lag for lag, cpu in timed if cpu < lag / 2 and lag > 10]
    return (
        f"; worst with the loop thread working through it: {f'{working} ms' if working else 'none over 5 ms'};"
        f" {len(idle)} over 10 ms while the thread was mostly not running"
        + (f" (worst {max(idle)} ms)" if idle else "")
    )
