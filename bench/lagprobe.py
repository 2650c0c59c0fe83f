"""Event-loop lag probe of the Python bench servers, and the bench's side of it (reading lag, asking for a GC count).

In a server process (``BENCH_LAG_FILE=path``, set by bench/procs.py ``start_server``) a 5 ms loop timer measures how
late it wakes (CLOCK_MONOTONIC); wake-ups more than 5 ms late are stalls. They are buffered and appended to the file
as ``<monotonic seconds> <lag ms>`` lines every 0.5 s (a separate 0.5 s timer), each flush ending with a heartbeat
``h <monotonic seconds> <ticks> <arms>`` line, so the bench (same host, same clock) can pick the stalls inside any
step's window; garbage collections over 5 ms (a gc.callbacks hook) as ``g <monotonic seconds> <ms> <generation>``. At a flush, when ``path.gc-request`` exists, the probe runs ``gc.collect()`` on the serving loop and
writes ``path.gc.json``: the request's token, ``len(gc.get_objects())``, ``gc.get_stats()``, the collect's duration
and RSS.

Cost: on this kind of VM a timer that wakes an idle process costs about 55 us of CPU (measured: 1.1-1.7% of a core
at 200 wake-ups/s), which would add 2-3 us to every delivery of a paced 4,000 deliveries/s step whose loop idles
between sends. So by default (``BENCH_LAG_MODE=cpu``) the 5 ms timer runs only while the loop is busy: a tick that
finds the loop thread used under 20% of the last interval stops it, and a CPU-time interval timer (``ITIMER_PROF``:
SIGPROF after 2 ms of process CPU, checked at each scheduler tick, so about every 4 ms of CPU at HZ=250; never while
the process sleeps) starts it again with a first tick at once (``call_soon``), due:

* when the loop thread has not slept since the timer stopped (or since a garbage collection over 5 ms began):
  back then, so a stall that starts from idle, a GC pause included, is measured whole;
* otherwise now: the stall is read short by the SIGPROF delay (under 4 ms, rarely 8), as a running 5 ms timer
  reads a stall short by up to 5 ms.

A stall that burns no CPU (a blocking sleep in the loop) is not seen from idle. ``BENCH_LAG_MODE=wall``: the plain
always-on 5 ms timer (the cross-check; also the fallback when the probe starts outside the main thread).

Where it runs: bench/servers/raw_ws.py starts it in its loop; bench/asgi.py starts it from a lifespan startup
(uvicorn) or, under daphne, on the Twisted asyncio reactor's loop (the one serving the ASGI application);
bench/servers/sio.py from python-socketio's ``on_startup``. Only the standard library is imported here.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import json
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

INTERVAL = 0.005  # seconds between wake-ups while the loop is busy
THRESHOLD_MS = 5.0  # lateness recorded
FLUSH_SECONDS = 0.5
CPU_SLICE = 0.001  # ITIMER_PROF interval (process CPU seconds); checked at scheduler ticks (4 ms at HZ=250)
IDLE_SHARE = 0.2  # the loop thread used less than this share of the last interval: stop the timer


def _sleeps() -> int:
    """Voluntary context switches of the calling thread (it blocked: in the loop, that is waiting for I/O)."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


class LagProbe:
    """The 5 ms lateness timer on the serving loop (restarted by SIGPROF when idle-stopped), and the flush timer."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.request = path + ".gc-request"
        self.answer = path + ".gc.json"
        self.mode = "cpu" if os.environ.get("BENCH_LAG_MODE", "cpu") != "wall" else "wall"
        if self.mode == "cpu" and threading.current_thread() is not threading.main_thread():
            self.mode = "wall"  # signal handlers are the main thread's
        self.file = open(path, "a")  # noqa: SIM115 - open for the life of the process
        loop_name = f"{type(loop).__module__}.{type(loop).__qualname__}"
        self.file.write(f"# lagprobe pid={os.getpid()} loop={loop_name} mode={self.mode}\n")
        self.file.flush()
        self.events: list[str] = []
        self.ticks = self.arms = 0
        self.collecting = False
        now = time.monotonic()
        self.due = self.last_at = now + INTERVAL
        self.last_cpu = self.mark_cpu = time.thread_time()  # mark: the loop thread's CPU when the timer stopped
        self.stall_cpu_from = self.last_cpu  # the thread's CPU where the lateness the next tick measures began
        self.gc_cpu = self.gc_pause_cpu = 0.0  # ... at a collection's start; at the start of one over 5 ms
        self.mark_sleeps = 0
        self.in_gc = False
        self.gc_at = self.gc_pause_at = 0.0  # a collection's start; one over 5 ms, not yet counted
        self.gc_pause_sleeps = 0
        self.armed = True  # the 5 ms timer runs
        loop.call_later(INTERVAL, self.tick)
        loop.call_later(FLUSH_SECONDS, self.flush)
        gc.callbacks.append(self.on_gc)
        if self.mode == "cpu":
            signal.signal(signal.SIGPROF, self.on_cpu)
            signal.setitimer(signal.ITIMER_PROF, CPU_SLICE, CPU_SLICE)
            atexit.register(signal.setitimer, signal.ITIMER_PROF, 0, 0)  # no SIGPROF once handlers are reset

    def on_cpu(self, signum: int, frame: object) -> None:
        """SIGPROF (the process used CPU): restart a stopped timer; its first tick at once."""
        if self.armed or self.collecting:
            return
        self.armed = True  # first: a handler may run inside this one
        try:
            now, cpu = time.monotonic(), time.thread_time()
            if self.in_gc:  # the handler runs as the collection's "stop" callback begins
                self.due, self.stall_cpu_from = self.gc_at, self.gc_cpu
            elif self.gc_pause_at and _sleeps() == self.gc_pause_sleeps:  # a long collection in this CPU burst
                self.due, self.stall_cpu_from = self.gc_pause_at, self.gc_pause_cpu
            elif _sleeps() == self.mark_sleeps:  # no sleep since the timer stopped: all one CPU burst
                self.due, self.stall_cpu_from = now - (cpu - self.mark_cpu), self.mark_cpu
            else:
                self.due, self.stall_cpu_from = now, cpu
            self.gc_pause_at = 0.0
            self.last_at, self.last_cpu = now, cpu
            self.loop.call_soon(self.tick)
            self.arms += 1
        except Exception:  # the loop closed (shutdown): no more SIGPROF
            signal.setitimer(signal.ITIMER_PROF, 0, 0)

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        """Record collections over 5 ms (``g`` lines); while the timer is stopped, remember one for SIGPROF's handler.

        A collection is a stall in C: the handler runs only after it, and then counts the stall from its start.
        """
        now = time.monotonic()
        if phase == "start":
            self.gc_at, self.gc_cpu = now, time.thread_time()
            self.in_gc = not (self.armed or self.collecting)
            return
        pause_ms = (now - self.gc_at) * 1000
        if pause_ms > THRESHOLD_MS and not self.collecting:
            self.events.append(f"g {now:.6f} {pause_ms:.2f} {info['generation']}\n")
        if self.in_gc:
            self.in_gc = False
            if pause_ms > THRESHOLD_MS:
                self.gc_pause_at, self.gc_pause_sleeps, self.gc_pause_cpu = self.gc_at, _sleeps(), self.gc_cpu

    def tick(self) -> None:
        """Record this wake-up's lateness; then wait 5 ms more, or stop while the loop idles (``cpu`` mode)."""
        now, cpu = time.monotonic(), time.thread_time()
        lag_ms = (now - self.due) * 1000
        self.ticks += 1
        if lag_ms > THRESHOLD_MS:  # with the loop thread's CPU through it: work, or the thread not running
            self.events.append(f"{now:.6f} {lag_ms:.2f} {(cpu - self.stall_cpu_from) * 1000:.2f}\n")
        elif (
            self.mode == "cpu"
            and now - self.last_at >= INTERVAL
            and cpu - self.last_cpu < IDLE_SHARE * (now - self.last_at)
        ):
            self.mark_cpu, self.mark_sleeps = cpu, _sleeps()
            self.armed = False
            return
        self.last_at, self.last_cpu = now, cpu
        self.due, self.stall_cpu_from = now + INTERVAL, cpu
        self.loop.call_later(INTERVAL, self.tick)

    def flush(self) -> None:
        """Every 0.5 s: append the buffered stalls and a heartbeat; answer a pending GC request."""
        events, self.events = self.events, []  # (a collection may append while this writes)
        events.append(f"h {time.monotonic():.6f} {self.ticks} {self.arms}\n")
        self.file.write("".join(events))
        self.file.flush()
        if os.path.exists(self.request):
            self.collecting = True
            try:
                with contextlib.suppress(OSError):
                    self.collect()
            finally:  # a requested gc.collect() is not a stall of the server's
                self.mark_cpu, self.mark_sleeps = time.thread_time(), _sleeps()
                self.due = time.monotonic() + INTERVAL
                self.collecting = False
        self.loop.call_later(FLUSH_SECONDS, self.flush)

    def collect(self) -> None:
        """gc.collect(), then the tracked-object count (in all and by type) and the GC statistics to ``path.gc.json``."""
        token = Path(self.request).read_text().strip()
        os.unlink(self.request)
        started = time.perf_counter()
        collected = gc.collect()
        collect_ms = (time.perf_counter() - started) * 1000
        frozen = gc.get_freeze_count()
        if frozen:
            gc.unfreeze()  # by type, the frozen objects too (a frozen cycle that is garbage is a leak); frozen again below
        objects = gc.get_objects()
        by_type: dict[str, int] = {}
        for obj in objects:
            name = f"{type(obj).__module__}.{type(obj).__qualname__}"
            by_type[name] = by_type.get(name, 0) + 1
        tracked = len(objects) - frozen
        del objects
        if frozen:
            gc.freeze()
        rss = 0
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        answer = {
            "token": token,
            "at": time.monotonic(),
            "tracked_objects": tracked,
            "collected": collected,
            "collect_ms": round(collect_ms, 1),
            "gc_count": gc.get_count(),
            "gc_stats": gc.get_stats(),
            "gc_frozen": frozen,
            "gc_garbage": len(gc.garbage),
            "rss_kib": rss,
            "by_type": by_type,
        }
        Path(self.answer + ".tmp").write_text(json.dumps(answer))
        os.replace(self.answer + ".tmp", self.answer)


_PROBE: list[LagProbe] = []


def _start(loop: asyncio.AbstractEventLoop) -> None:
    path = os.environ.get("BENCH_LAG_FILE")
    if path and not _PROBE:
        _PROBE.append(LagProbe(path, loop))


def install() -> None:
    """Start the probe (once per process) when ``BENCH_LAG_FILE`` is set: on the running loop, else on daphne's.

    Under daphne the application is imported before the Twisted asyncio reactor runs its loop: the start is queued on
    that loop (``reactor._asyncioEventloop``, where daphne runs the application instances).
    """
    if not os.environ.get("BENCH_LAG_FILE") or _PROBE:
        return
    try:
        _start(asyncio.get_running_loop())
        return
    except RuntimeError:
        pass
    reactor = sys.modules.get("twisted.internet.reactor")
    loop = getattr(reactor, "_asyncioEventloop", None)
    if isinstance(loop, asyncio.AbstractEventLoop):
        loop.call_soon(_start, loop)


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI lifespan application that starts the probe at startup (uvicorn runs it on its serving loop)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            install()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# ---- the bench's side -------------------------------------------------------------------------------------------


def read(path: Path) -> tuple[bool, float, list[tuple[float, float, float]]]:
    """(probe running?, last heartbeat, [(monotonic s, lag ms, CPU ms)]) from a probe's file.

    CPU ms: the loop thread's CPU time from where the lateness began (the wake-up before, a collection's
    start, or the start of the CPU burst that re-armed the stopped timer) to the late wake-up: about the lag
    (plus up to 5 ms) when the stall was work in the thread, much less when the thread was not running.
    """
    lines = _whole_lines(path)
    heartbeat = 0.0
    events: list[tuple[float, float, float]] = []
    for line in lines:
        if line.startswith("h "):
            heartbeat = float(line.split()[1])
        elif line and not line.startswith(("#", "g ")):
            at, lag, cpu = line.split()
            events.append((float(at), float(lag), float(cpu)))
    return bool(lines) and lines[0].startswith("#"), heartbeat, events


def gc_pauses(path: Path) -> list[tuple[float, float, int]]:
    """Garbage collections over 5 ms in a probe's file: (monotonic s at the end, ms, generation)."""
    lines = _whole_lines(path)
    return [
        (float(at), float(ms), int(gen)) for _, at, ms, gen in (line.split() for line in lines if line.startswith("g "))
    ]


def _whole_lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except OSError:
        return []
    return text[: text.rfind("\n") + 1].splitlines()  # a flush being written: whole lines only


def summary(events: list[tuple[float, float, float]], start: float, end: float) -> dict[str, Any]:
    """Loop lag in a window: worst lateness (0: no wake-up over 5 ms late) and the counts over 20 and 10 ms."""
    lags = [lag for at, lag, _cpu in events if start <= at <= end]
    return {
        "max_ms": round(max(lags, default=0.0), 1),
        "over_20ms": sum(1 for lag in lags if lag > 20),
        "over_10ms": sum(1 for lag in lags if lag > 10),
    }


async def wait_flushed(paths: list[Path], until: float, limit: float = 5.0) -> None:
    """Wait (bounded) until every running probe has flushed past ``until`` (monotonic)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        states = [read(path) for path in paths]
        if all(not running or heartbeat >= until for running, heartbeat, _ in states):
            return
        await asyncio.sleep(0.1)


async def request_gc(path: Path, limit: float = 60.0) -> dict[str, Any] | None:
    """Ask the probe for a gc.collect() and the tracked-object count; None without a probe or on timeout."""
    if not read(path)[0]:
        return None
    token = _request(path)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        answer = _answer(path)
        if answer is not None and answer.get("token") == token:
            return answer
    return None


def _request(path: Path) -> str:
    token = str(time.monotonic_ns())
    Path(str(path) + ".gc-request.tmp").write_text(token)
    os.replace(str(path) + ".gc-request.tmp", str(path) + ".gc-request")
    return token


def _answer(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(Path(str(path) + ".gc.json").read_text()))
    except (OSError, ValueError):
        return None
