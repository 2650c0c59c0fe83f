"""Run the benchmark suite: every scenario against our hub (uvicorn, daphne) and the baselines.

    bash bench/run.sh [--quick] [--only echo,groups] [--out PATH]
    bash bench/run.sh --only transports   # S8 alone: WebSockets, SSE, long polling x JSON, MessagePack

Writes bench/results/run-<time>.json (and latest.json, unless --only or --impls picked a part) plus PNG plots in
bench/results/plots/.
``--quick`` is the CI smoke run: tiny sizes, no timing assertions, but it fails (exit 1) when a
scenario breaks: a delivery ratio below 1 at low load, a duplicate, or a wrong final group membership.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.procs import CLIENT_CORE, ROOT, pinning_available, start_redis
from bench.scenarios import SCENARIOS, Bench, Sizes, full_sizes, quick_sizes
from bench.targets import evaluate, smoke_failures

RESULTS = ROOT / "bench" / "results"
ALL_IMPLS = ("hub-uvicorn", "hub-daphne", "raw_ws", "channels-daphne", "socketio", "node-ws", "node-socketio")
#: The hot paths, once more with metrics off, in the same run (the metrics' cost).
METRICS_OFF = ("hub-uvicorn-nometrics",)
#: The hub as deploy/ runs it: uvicorn with the lean WebSocket protocol (signalr_groups/server/uvicorn_ws.py) and
#: GC_FREEZE_CONNECTIONS (hubproject/settings_production.py's 1,000).
LEAN_WS = ("hub-uvicorn-lean",)
SCENARIO_IMPLS: dict[str, tuple[str, ...]] = {
    "echo": ALL_IMPLS + METRICS_OFF + LEAN_WS,
    "broadcast": ALL_IMPLS + METRICS_OFF + LEAN_WS,
    "groups": ALL_IMPLS + METRICS_OFF + LEAN_WS,
    "users": ALL_IMPLS + LEAN_WS,
    "churn": ALL_IMPLS + LEAN_WS,
    # raw_ws-keepalive: the baseline here (SignalR's 15 s pings both ways, as the hub; raw_ws has websockets' own).
    "idle": (
        "hub-uvicorn",
        "hub-uvicorn-lean",
        "hub-daphne",
        "raw_ws",
        "raw_ws-keepalive",
        "socketio",
        "node-ws",
        "node-socketio",
    ),
    "scaleout": ("hub-uvicorn", "channels-daphne"),
    # Transports x hub protocols on one 1,000-member group, the WebSocket/JSON baseline in the same server process.
    "transports": ("hub-uvicorn",),
    # 10,000 connections, steady fan-out to one 1,000-member group: loop stalls (probe), then the closed-connection leak.
    "steady": ("hub-uvicorn-lean", "hub-uvicorn", "hub-daphne", "raw_ws"),
}


def host_info() -> dict[str, Any]:
    """nproc, CPU model, kernel, Python, memory."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "pinning": {"server": 0, "client": CLIENT_CORE, "redis": CLIENT_CORE} if pinning_available() else None,
    }


def git_sha() -> str:
    """The commit the suite ran on (with -dirty when the tree has changes)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE to the hard limit (inherited by the servers we start)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


PROFILE = False


def start_profiler(pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """py-spy (when installed) sampling a server: collapsed stacks in bench/results/profiles/."""
    spy = Path(sys.executable).parent / "py-spy"
    if not PROFILE or not spy.exists():
        return None
    folder = RESULTS / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    command = [str(spy), "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--nonblocking"]
    return subprocess.Popen(
        [*command, "--output", str(folder / f"{name}.txt")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop_profiler(spy: subprocess.Popen[bytes] | None) -> None:
    """SIGINT makes py-spy write its output; then wait for it (by PID)."""
    if spy is None or spy.poll() is not None:
        return
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(10)


async def run_one(name: str, impl: str, sizes: Sizes, layer: str = "memory", redis_url: str = "") -> dict[str, Any]:
    """One scenario against one implementation, on fresh server processes stopped afterwards."""
    started = time.monotonic()
    bench = Bench(impl, sizes, layer, redis_url, servers=2 if name == "scaleout" else 1)
    spies = [
        start_profiler(proc.pid, f"{name}-{impl}{'@' + layer if layer != 'memory' else ''}-{index}")
        for index, proc in enumerate(bench.procs)
    ]
    try:
        result = await SCENARIOS[name](bench)
        await bench.fill_loop_lag()  # each step's loop_lag, from the servers' probes (bench/lagprobe.py)
    finally:
        for spy in spies:
            stop_profiler(spy)
        bench.stop()
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def revocation(sizes: Sizes) -> dict[str, Any]:
    """Revocation to the last of 5 devices (bench/revocation.py, its own daphne with the test project)."""
    out = RESULTS / "revocation.json"
    out.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(ROOT / "bench" / "revocation.py"),
        "--devices",
        "5",
        "--rounds",
        str(sizes.revocation_rounds),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"revocation bench failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(out.read_text()))


async def run_suite(sizes: Sizes, only: set[str] | None, impls: set[str] | None) -> dict[str, Any]:
    """Every selected scenario x implementation; failures are recorded, not raised."""
    scenarios: dict[str, Any] = {}
    errors: list[str] = []
    for name, names in SCENARIO_IMPLS.items():
        if only and name not in only:
            continue
        chosen = [impl for impl in names if not impls or impl in impls]
        if name == "scaleout":
            scenarios[name] = {}
            redis = start_redis()
            try:
                url = f"redis://127.0.0.1:{redis.port}"
                for layer in ("redis", "pubsub"):
                    for impl in chosen:
                        key = f"{impl}@{layer}"
                        print(f"== {name} {key}", flush=True)
                        try:
                            scenarios[name][key] = await run_one(name, impl, sizes, layer, url)
                        except Exception:
                            errors.append(f"{name} {key}: {traceback.format_exc()}")
                            print(errors[-1], flush=True)
            finally:
                redis.stop()
            continue
        scenarios[name] = {}
        for impl in chosen:
            print(f"== {name} {impl}", flush=True)
            try:
                scenarios[name][impl] = await run_one(name, impl, sizes)
            except Exception:
                errors.append(f"{name} {impl}: {traceback.format_exc()}")
                print(errors[-1], flush=True)
    if not only or "revocation" in only:
        print("== revocation", flush=True)
        try:
            scenarios["revocation"] = revocation(sizes)
        except Exception:
            errors.append(f"revocation: {traceback.format_exc()}")
    return {"scenarios": scenarios, "errors": errors}


def main() -> None:
    """Parse arguments, run, write JSON and plots; exit 1 when a scenario broke."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny sizes, < 60 s, no timing assertions")
    parser.add_argument(
        "--only", default="", help="comma-separated scenarios (" + ",".join([*SCENARIOS, "revocation"]) + ")"
    )
    parser.add_argument("--impls", default="", help="comma-separated implementations (" + ",".join(ALL_IMPLS) + ")")
    parser.add_argument("--out", default="", help="JSON output path (default bench/results/run-<time>.json)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--profile", action="store_true", help="sample each server with py-spy (bench/results/profiles/)"
    )
    args = parser.parse_args()
    global PROFILE
    PROFILE = args.profile
    sizes = quick_sizes() if args.quick else full_sizes()
    nofile = raise_nofile()
    host = {**host_info(), "rlimit_nofile": nofile}  # before pinning ourselves to one core
    if pinning_available():
        os.sched_setaffinity(0, {CLIENT_CORE})
    started = time.time()
    only = set(filter(None, args.only.split(","))) or None
    impls = set(filter(None, args.impls.split(","))) or None
    try:
        import uvloop

        outcome = uvloop.run(run_suite(sizes, only, impls))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        outcome = asyncio.run(run_suite(sizes, only, impls))
    report: dict[str, Any] = {
        "suite": "signalr_groups-bench",
        "version": 1,
        "mode": "quick" if args.quick else "full",
        "git_sha": git_sha(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "host": host,
        "payload_chars": 64,
        **outcome,
    }
    report["targets"] = evaluate(report["scenarios"]) if not args.quick else []
    if only is not None or impls is not None:  # a partial run: only the targets it measured
        report["targets"] = [target for target in report["targets"] if target["value"] is not None]
    RESULTS.mkdir(exist_ok=True)
    out = (
        Path(args.out)
        if args.out
        else RESULTS
        / f"run-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(started))}{'-quick' if args.quick else ''}.json"
    )
    text = json.dumps(report, indent=1)
    out.write_text(text)
    if only is None and impls is None:  # latest*.json: the last complete run, never a partial one
        (RESULTS / ("latest-quick.json" if args.quick else "latest.json")).write_text(text)
    print(f"wrote {out} ({report['seconds']} s)")
    if not args.no_plots and not args.quick:
        from bench.report import plot_run

        plots = plot_run(report, RESULTS / "plots")
        print("plots: " + ", ".join(str(path) for path in plots))
    for target in report["targets"]:
        print(f"  {'PASS' if target['holds'] else 'FAIL'}  {target['name']}: {target['value']} ({target['detail']})")
    problems = list(report["errors"]) + smoke_failures(report["scenarios"], strict=args.quick)
    for problem in problems:
        print("BROKEN: " + problem.splitlines()[0] if "\n" in problem else "BROKEN: " + problem)
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
