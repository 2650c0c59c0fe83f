"""py-spy flame graphs of bench/ S3's paced steps (issue 15): one record per frame, 4,000 offered deliveries/s.

    python -m bench.flame --impl hub-uvicorn --sizes 1000,4000 --seconds 20 --out docs/performance/flame --label after

For each size: a fresh server of ``impl`` (bench.procs.start_server through ``Bench``: pinned to core 0, this process
to core 1, as in the suite), ``size`` connections joined to one group (as ``scenarios.groups`` does), then
``py-spy record --format flamegraph --nonblocking`` attached for the paced window only: 4,000 / size sends a second
(4/s at 1,000 members, 1/s at 4,000) for ``--seconds``, and the bounded drain. py-spy stops on SIGINT, the server on
SIGTERM, both by PID. Prints one JSON line per size: sends, deliveries, server CPU µs per delivery (``Process.cpu()``,
as the suite), the load average. The SVG is ``OUT/<label>-<impl>-<size>.svg``. Needs py-spy (bench/requirements.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.client import payload
from bench.procs import CLIENT_CORE, pinning_available
from bench.scenarios import Bench, Sizes, constant
from bench.suite import raise_nofile

SPY = Path(sys.executable).parent / "py-spy"
ATTACH_SECONDS = 1.0  # py-spy's attach, before the first send


def start_spy(pid: int, output: Path, rate: int) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` into a flame graph SVG (written when it gets SIGINT); a stale SVG goes first."""
    output.unlink(missing_ok=True)
    command = [str(SPY), "record", "--pid", str(pid), "--rate", str(rate), "--format", "flamegraph", "--nonblocking"]
    return subprocess.Popen([*command, "--output", str(output)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_spy(spy: subprocess.Popen[bytes], output: Path) -> int:
    """SIGINT (by PID) makes py-spy write the SVG; wait for it (bounded). Returns the SVG's size in KiB."""
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)
    try:
        _, err = spy.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
        _, err = spy.communicate(timeout=10)
    if not output.exists():
        raise RuntimeError(f"py-spy wrote no {output}: {err.decode(errors='replace')[-500:]}")
    return round(output.stat().st_size / 1024)


async def profile(impl: str, size: int, seconds: float, output: Path, rate_hz: int) -> dict[str, Any]:
    """One paced step of ``size`` members against a fresh server, profiled; the step's figures."""
    bench = Bench(impl, Sizes())
    try:
        await bench.connect(size)
        conns, group = bench.conns, f"flame{size}"

        async def join(seq: int, scheduled: int, i: int) -> None:
            await conns[i].call("JoinGroup", group, payload(seq, scheduled), ack=True)

        joins = await bench.step(4000, join, constant(1), seconds=size / 4000)
        if joins["ratio"] < 1:
            raise RuntimeError(f"{impl}: {joins['delivered']} of {size} joins acknowledged")
        await bench.settle()

        async def fire(seq: int, scheduled: int, i: int) -> None:
            await conns[i % 4].call("SendToGroup", group, payload(seq, scheduled))

        rate = 4000 / size
        spy = start_spy(bench.procs[0].pid, output, rate_hz)
        try:
            await asyncio.sleep(ATTACH_SECONDS)
            if spy.poll() is not None:
                raise RuntimeError("py-spy exited at once (is ptrace allowed?)")
            step = await bench.step(rate, fire, constant(size), seconds=seconds, label={"group_size": size})
        finally:
            svg_kib = stop_spy(spy, output)
        return {
            "impl": impl,
            "size": size,
            "sends": step["sends"],
            "expected": step["expected"],
            "delivered": step["delivered"],
            "ratio": step["ratio"],
            "server_cpu_us_per_delivery": step["server_cpu_us_per_delivery"],
            "fanout_p50_ms": step["fanout_ms"]["p50"],
            "client_bound": step["client_bound"],
            "loadavg": [round(load, 2) for load in os.getloadavg()],
            "svg": str(output),
            "svg_kib": svg_kib,
        }
    finally:
        bench.stop()


async def run(impl: str, sizes: list[int], seconds: float, out: Path, label: str, rate_hz: int) -> None:
    """Every size in turn, each on its own server."""
    for size in sizes:
        started = time.monotonic()
        result = await profile(impl, size, seconds, out / f"{label}-{impl}-{size}.svg", rate_hz)
        result["wall_s"] = round(time.monotonic() - started, 1)
        print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", default="hub-uvicorn")
    parser.add_argument("--sizes", default="1000,4000", help="group sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="the paced window per size")
    parser.add_argument("--out", type=Path, default=Path("docs/performance/flame"))
    parser.add_argument("--label", default="after", help="file name prefix: before, after, ...")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    args = parser.parse_args()
    if not SPY.exists():
        sys.exit(f"{SPY} is missing: pip install -r bench/requirements.txt")
    sizes = [int(size) for size in args.sizes.split(",") if size]
    if not sizes or min(sizes) < 4 or args.seconds <= 0:
        sys.exit("--sizes: at least 4 members each (4 senders); --seconds > 0")
    args.out.mkdir(parents=True, exist_ok=True)
    raise_nofile()
    if pinning_available():
        os.sched_setaffinity(0, {CLIENT_CORE})
    main_coro = run(args.impl, sizes, args.seconds, args.out, args.label, args.rate)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(main_coro)
    else:
        uvloop.run(main_coro)


if __name__ == "__main__":
    main()
