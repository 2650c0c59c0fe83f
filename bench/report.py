"""Plots of one run (matplotlib, Agg backend) and the tables of docs/performance.md."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any


def plot_run(report: dict[str, Any], folder: Path) -> list[Path]:
    """One PNG per stepped scenario plus group-size linearity and the ratio summary."""
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    scenarios = report["scenarios"]
    for name in ("echo", "broadcast", "users", "churn", "scaleout"):
        impls = scenarios.get(name) or {}
        if not impls:
            continue
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        top, low = 1.0, float("inf")
        for impl, result in impls.items():
            steps = result.get("steps", [])
            if name == "users":
                steps = [s for s in steps if s.get("devices") == 5]
            if not steps:
                continue
            x = [s["offered_deliveries_per_s"] for s in steps]
            top, low = max(top, *x), min(low, *x)
            line = left.plot(x, [s["delivered_per_s"] for s in steps], marker="o", label=impl)[0]
            right.plot(
                x, [max(0.01, s["fanout_ms"]["p99"]) for s in steps], marker="o", color=line.get_color(), label=impl
            )
            for s, xi in zip(steps, x, strict=True):
                if s.get("client_bound"):  # client-bound points: hollow marker
                    left.plot(
                        [xi], [s["delivered_per_s"]], marker="o", markersize=11, markerfacecolor="none", color="black"
                    )
        low = min(low, top) / 2
        left.plot([low, top], [low, top], linestyle="--", color="grey", linewidth=0.8)
        left.set(
            xscale="log", yscale="log", xlabel="offered deliveries/s", ylabel="delivered/s", title=f"{name}: throughput"
        )
        right.set(
            yscale="log",
            xscale="log",
            xlabel="offered deliveries/s",
            ylabel="p99 to last recipient (ms)",
            title=f"{name}: latency",
        )
        left.legend(fontsize=7)
        fig.suptitle(f"{name} ({report['host']['nproc']} cores; ringed = client-bound)", fontsize=9)
        fig.tight_layout()
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    groups = scenarios.get("groups") or {}
    if groups:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        for impl, result in groups.items():
            steps = [s for s in result.get("steps", []) if s.get("server_cpu_us_per_delivery")]
            if not steps:
                continue
            sizes = [s["group_size"] for s in steps]
            line = left.plot(sizes, [s["server_cpu_us_per_delivery"] for s in steps], marker="o", label=impl)[0]
            right.plot(
                sizes, [max(0.01, s["fanout_ms"]["p50"]) for s in steps], marker="o", color=line.get_color(), label=impl
            )
        left.set(
            xscale="log",
            yscale="log",
            xlabel="group size",
            ylabel="server CPU us per delivery",
            title="cost per delivery (flat = linear)",
        )
        right.set(
            xscale="log", yscale="log", xlabel="group size", ylabel="p50 ms to last member", title="fan-out completion"
        )
        left.legend(fontsize=7)
        fig.tight_layout()
        path = folder / "groups.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    transports = scenarios.get("transports") or {}
    if transports:
        fig, axis = plt.subplots(figsize=(8, 3.6))
        width = 0.8 / max(1, len(transports))
        for offset, (impl, result) in enumerate(transports.items()):
            steps = [s for s in result.get("steps", []) if s.get("server_cpu_us_per_delivery")]
            if not steps:
                continue
            positions = [k + offset * width for k in range(len(steps))]
            bars = axis.bar(positions, [s["server_cpu_us_per_delivery"] for s in steps], width, label=impl)
            axis.bar_label(bars, [f"{s['server_cpu_us_per_delivery']:g}" for s in steps], fontsize=7)
            axis.set_xticks(positions, [s["variant"] for s in steps], fontsize=7)
        size = next((s["group_size"] for r in transports.values() for s in r.get("steps", [])), "?")
        axis.set(ylabel="server CPU us per delivery", title=f"transports x protocols, one {size}-member group")
        axis.legend(fontsize=7)
        fig.tight_layout()
        path = folder / "transports.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    steady = scenarios.get("steady") or {}
    if any(result.get("lag_events") is not None for result in steady.values()):
        fig, axis = plt.subplots(figsize=(11, 4.2))
        for impl, result in steady.items():
            events = result.get("lag_events")
            if events is None:
                continue
            lag = result.get("loop_lag") or {}
            label = f"{impl}: max {lag.get('max_ms', '?')} ms, {lag.get('over_20ms', '?')} over 20 ms"
            line = axis.plot(
                [e[0] for e in events], [e[1] for e in events], marker="o", linestyle="none", ms=3, label=label
            )
            pauses = result.get("gc_pauses") or []
            if pauses:  # the garbage collections among them
                axis.plot(
                    [p[0] for p in pauses], [p[1] for p in pauses], marker="x", linestyle="none", ms=6,
                    color=line[0].get_color(), label=f"{impl}: GC pauses > 5 ms",
                )  # fmt: skip
        axis.axhline(20, color="red", linestyle="--", linewidth=0.8)
        first = next(iter(steady.values()))
        axis.set(
            yscale="log",
            xlabel="seconds into the step",
            ylabel="event-loop stall (ms; > 5 ms shown)",
            title=f"steady: {first.get('connections', '?'):,} connections, a {first.get('group_size', '?'):,}-member "
            "group at 4 sends/s: loop stalls (probe)",
        )
        axis.legend(fontsize=7)
        fig.tight_layout()
        path = folder / "steady.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    targets = [t for t in report.get("targets", []) if t["value"] is not None]
    if targets:
        fig, axis = plt.subplots(figsize=(11, 0.35 * len(targets) + 1))
        labels = [t["name"] for t in targets]
        axis.barh(
            range(len(targets)),
            [t["value"] for t in targets],
            color=["tab:green" if t["holds"] else "tab:red" for t in targets],
        )
        axis.set_yticks(range(len(targets)), labels, fontsize=7)
        axis.set_xscale("log")
        axis.invert_yaxis()
        axis.set_title("targets (green holds, red fails); values as in docs/performance.md", fontsize=9)
        fig.tight_layout()
        path = folder / "targets.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def _range(values: list[float | None], digits: int = 1) -> str:
    present = [value for value in values if value is not None]
    if not present:
        return "n/a"
    low, high = min(present), max(present)
    fmt = f"{{:,.{digits}f}}"
    return fmt.format(low) if fmt.format(low) == fmt.format(high) else f"{fmt.format(low)}–{fmt.format(high)}"


def _step_rows(runs: list[dict[str, Any]], name: str, key: str = "") -> list[str]:
    rows = []
    impls: list[str] = []
    for run in runs:
        for impl in run["scenarios"].get(name, {}):
            if impl not in impls:
                impls.append(impl)
    for impl in impls:
        per_run = [run["scenarios"].get(name, {}).get(impl, {}).get("steps", []) for run in runs]
        labels: list[tuple[Any, float]] = []
        for steps in per_run:
            for step in steps:
                label = (step.get(key) if key else None, step["offered_per_s"])
                if label not in labels:
                    labels.append(label)
        for label in labels:
            matched = [
                next((s for s in steps if (s.get(key) if key else None, s["offered_per_s"]) == label), None)
                for steps in per_run
            ]
            found = [s for s in matched if s is not None]
            bound = " (client-bound)" if any(s.get("client_bound") for s in found) else ""
            sat = " (saturated)" if any(s.get("saturated") or s["ratio"] < 0.999 for s in found) else ""
            head = f"| {impl} | " + (f"{label[0]} | " if key else "") + f"{label[1]:g} | "
            rows.append(
                head
                + " | ".join(
                    [
                        _range([s["offered_deliveries_per_s"] for s in found], 0),
                        _range([s["delivered_per_s"] for s in found], 0) + bound,
                        _range([s["ratio"] for s in found], 4) + sat,
                        _range([s["lat_ms"]["p50"] for s in found]),
                        _range([s["lat_ms"]["p99"] for s in found]),
                        _range([s["fanout_ms"]["p99"] for s in found]),
                        _range([s["server_cpu_us_per_delivery"] for s in found]),
                        _range([s["client_cpu_cores"] for s in found], 2),
                        _range([(s.get("loop_lag") or {}).get("max_ms") for s in found]),
                    ]
                )
                + " |"
            )
    return rows


#: The label column of the stepped tables, by step key.
KEY_COLUMNS: dict[str, str] = {"variant": "transport/protocol"}


def markdown(runs: list[dict[str, Any]]) -> str:
    """The measured tables of docs/performance.md, as ranges over ``runs``."""
    lines: list[str] = []
    first = runs[0]
    host = first["host"]
    lines.append(
        f"Runs: {len(runs)} full runs ({', '.join(run['started'] + ' @ ' + run['git_sha'] for run in runs)}), "
        f"{_range([run['seconds'] for run in runs], 0)} s each. Machine: {host['nproc']} cores, {host['cpu_model']}, "
        f"Linux {host['kernel']}, Python {host['python']}, {host['mem_gib']} GiB; server pinned to core "
        f"{(host.get('pinning') or {}).get('server', '-')}, load generator (and Redis) to core {(host.get('pinning') or {}).get('client', '-')}. "
        "Ranges are min–max over the runs."
    )
    lines += ["", "### Targets", "", "| target | value | holds |", "|---|---|---|"]
    names: list[str] = []
    for run in runs:
        for target in run["targets"]:
            if target["name"] not in names:
                names.append(target["name"])
    for name in names:
        found = [t for run in runs for t in run["targets"] if t["name"] == name]
        holds = sum(1 for t in found if t["holds"])
        verdict = "yes" if holds == len(found) else ("no" if holds == 0 else f"{holds} of {len(found)} runs")
        lines.append(
            f"| {name} ({found[0]['detail'].split(';')[0]}) | {_range([t['value'] for t in found], 2)} | {verdict} |"
        )
    header = "| offered deliveries/s | delivered/s | delivery ratio | p50 ms | p99 ms | p99 to last recipient ms | server CPU µs/delivery | client CPU (cores) | max loop stall ms |"
    sep = "|---|---|---|---|---|---|---|---|---|---|---|"
    for name, title, key, label in (
        ("echo", "S1 RPC echo (200 connections; one completion per invocation)", "", "invocations/s"),
        ("broadcast", "S2 broadcast to all (1,000 connections)", "", "sends/s"),
        (
            "groups",
            "S3 groups: 100 × 10, 10 × 100, 1 × 1,000, 1 × 4,000 members, ~4,000 offered deliveries/s",
            "group_size",
            "sends/s",
        ),
        ("users", "S4 send to a user with N devices (100 users)", "devices", "user-sends/s"),
        ("churn", "S5 join/leave churn (500 connections, 50 groups; one ack per op)", "", "ops/s"),
        ("scaleout", "S7 scale-out: 2 processes on one Redis, 1,000-member group split over both", "", "sends/s"),
        (
            "transports",
            "S8 transports × hub protocols: one 1,000-member group, S3's step (4 sends/s from 4 WebSocket/JSON senders)",
            "variant",
            "sends/s",
        ),
    ):
        rows = _step_rows(runs, name, key)
        if not rows:
            continue
        lines += ["", f"### {title}", ""]
        lines.append(f"| impl | {KEY_COLUMNS.get(key, 'size/devices') + ' | ' if key else ''}{label} " + header)
        lines.append(sep + ("---|" if key else ""))
        lines += rows
        if name == "groups":
            lines += [
                "",
                "One record per frame (the 1,000- and 4,000-member steps: 15 s each, after 15 s without sends that "
                "measure the background; see What is measured):",
                "",
            ]
            lines += [
                "| impl | members | server CPU µs/delivery | background (cores) | µs/delivery net of it |",
                "|---|---|---|---|---|",
            ]
            for impl in runs[0]["scenarios"].get("groups", {}):
                for size in (1000, 4000):
                    per_frame = [
                        s
                        for run in runs
                        for s in run["scenarios"]["groups"].get(impl, {}).get("steps", [])
                        if s.get("group_size") == size and "server_cpu_us_per_delivery_net" in s
                    ]
                    if per_frame:
                        lines.append(
                            f"| {impl} | {size:,} | {_range([s['server_cpu_us_per_delivery'] for s in per_frame])} | "
                            f"{_range([s['server_background_cores'] for s in per_frame], 3)} | "
                            f"{_range([s['server_cpu_us_per_delivery_net'] for s in per_frame])} |"
                        )
            lines += ["", "Max throughput on one 1,000-member group (offered 40 sends/s = 40,000 deliveries/s):", ""]
            lines += [
                "| impl | delivered/s | delivery ratio | server CPU µs/delivery | client-bound |",
                "|---|---|---|---|---|",
            ]
            for impl in runs[0]["scenarios"].get("groups", {}):
                found = [run["scenarios"]["groups"].get(impl, {}).get("max_1000") for run in runs]
                top = [s for s in found if s]
                if top:
                    lines.append(
                        f"| {impl} | {_range([s['delivered_per_s'] for s in top], 0)} | {_range([s['ratio'] for s in top], 3)} | "
                        f"{_range([s['server_cpu_us_per_delivery'] for s in top])} | {'yes' if any(s['client_bound'] for s in top) else 'no'} |"
                    )
            lines += ["", "Joins (open-loop JoinGroup with ack, 4,000/s offered):", ""]
            lines += ["| impl | group size | joins | joins/s | p99 ms |", "|---|---|---|---|---|"]
            for impl in runs[0]["scenarios"].get("groups", {}):
                for index, join in enumerate(runs[0]["scenarios"]["groups"][impl].get("joins", [])):
                    found = [
                        run["scenarios"]["groups"].get(impl, {}).get("joins", [])[index : index + 1] for run in runs
                    ]
                    joins = [j[0] for j in found if j]
                    lines.append(
                        f"| {impl} | {join['size']} | {join['expected']} | {_range([j['delivered_per_s'] for j in joins], 0)} | {_range([j['lat_ms']['p99'] for j in joins])} |"
                    )
        if name == "transports":
            lines += ["", "Server CPU per delivery against WebSockets/JSON measured in the same server process:", ""]
            lines += [
                "| impl | transport/protocol | server CPU µs/delivery | × WebSockets/JSON | deliveries per poll |",
                "|---|---|---|---|---|",
            ]
            for impl, result in runs[0]["scenarios"].get("transports", {}).items():
                for index, first_step in enumerate(result.get("steps", [])):
                    found = [
                        step
                        for run in runs
                        for step in run["scenarios"]
                        .get("transports", {})
                        .get(impl, {})
                        .get("steps", [])[index : index + 1]
                    ]
                    per_poll = _range([s.get("deliveries_per_poll") for s in found], 2)
                    lines.append(
                        f"| {impl} | {first_step['variant']} | {_range([s['server_cpu_us_per_delivery'] for s in found])} | "
                        f"{_range([s.get('cpu_vs_ws_json') for s in found], 2)} | {per_poll if per_poll != 'n/a' else '–'} |"
                    )
        if name == "churn":
            lines += ["", "Final membership (every group probed once; each member must get it exactly once):", ""]
            lines += [
                "| impl | pairs expected | missing | unexpected | duplicates | correct |",
                "|---|---|---|---|---|---|",
            ]
            for impl in runs[0]["scenarios"].get("churn", {}):
                checks = [run["scenarios"]["churn"].get(impl, {}).get("membership") for run in runs]
                ok = [c for c in checks if c]
                lines.append(
                    f"| {impl} | {_range([c['expected_pairs'] for c in ok], 0)} | {_range([c['missing'] for c in ok], 0)} | "
                    f"{_range([c['unexpected'] for c in ok], 0)} | {_range([c['duplicates'] for c in ok], 0)} | {'yes' if all(c['ok'] for c in ok) else 'NO'} |"
                )
    lines += _steady_rows(runs)
    lines += ["", "### S6 connect rate and idle connections (one server process)", ""]
    lines += [
        "| impl | connections | connects/s | RSS MiB | KiB per connection | idle CPU % of a core |",
        "|---|---|---|---|---|---|",
    ]
    for impl in runs[0]["scenarios"].get("idle", {}):
        count = len(runs[0]["scenarios"]["idle"][impl].get("plateaus", []))
        for index in range(count):
            found = [
                p
                for run in runs
                for p in run["scenarios"].get("idle", {}).get(impl, {}).get("plateaus", [])[index : index + 1]
            ]
            lines.append(
                f"| {impl} | {found[0]['connections']:,} | {_range([p['connects_per_s'] for p in found], 0)} | {_range([p['rss_mib'] for p in found])} | "
                f"{_range([p['kib_per_conn'] for p in found])} | {_range([p['idle_cpu_percent_of_core'] for p in found], 2)} |"
            )
    revocations = [run["scenarios"].get("revocation") for run in runs]
    found_rev = [r for r in revocations if r]
    if found_rev:
        lines += [
            "",
            "### Revocation (5 devices of one user, hub on daphne with the test project)",
            "",
            f"p50 {_range([r['ms_p50'] for r in found_rev])} ms, p99 {_range([r['ms_p99'] for r in found_rev])} ms, "
            f"max {_range([r['ms_max'] for r in found_rev])} ms over {found_rev[0]['rounds']} rounds per run "
            "(admin-side revoke request sent → last device received `GroupAccessRevoked`).",
        ]
    return "\n".join(lines) + "\n"


def _steady_rows(runs: list[dict[str, Any]]) -> list[str]:
    """The steady fan-out table: loop stalls, CPU per delivery, and the objects left by closed connections."""
    impls = list(runs[0]["scenarios"].get("steady", {}))
    if not impls:
        return []
    first = next(iter(runs[0]["scenarios"]["steady"].values()))
    lines = [
        "",
        f"### Steady fan-out: {first.get('connections', 0):,} connections, one {first.get('group_size', 0):,}-member "
        "group at 4 sends/s (4,000 deliveries/s) for 20 s, then all closed",
        "",
        "Loop stalls from the probe in the server (bench/lagprobe.py, a 5 ms timer's lateness). Objects: GC-tracked "
        "after a gc.collect(), before connecting and after closing; per closed connection = the difference / closed.",
        "",
        "| impl | delivery ratio | server CPU µs/delivery | max loop stall ms | stalls > 20 ms | > 10 ms | "
        "objects before → after | per closed connection | RSS MiB before / connected / after close |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for impl in impls:
        found = [run["scenarios"].get("steady", {}).get(impl) for run in runs]
        results = [r for r in found if r and r.get("steps")]
        if not results:
            continue
        steps = [r["steps"][0] for r in results]
        lags = [r.get("loop_lag") or {} for r in results]
        objects = [r["objects"] for r in results if r.get("objects")]
        rss = [r.get("rss_mib", {}) for r in results]
        lines.append(
            f"| {impl} | {_range([s['ratio'] for s in steps], 4)} | {_range([s['server_cpu_us_per_delivery'] for s in steps])} | "
            f"{_range([lag.get('max_ms') for lag in lags])} | {_range([lag.get('over_20ms') for lag in lags], 0)} | "
            f"{_range([lag.get('over_10ms') for lag in lags], 0)} | "
            + (
                f"{_range([o['before'] for o in objects], 0)} → {_range([o['after_close'] for o in objects], 0)} | "
                f"{_range([o['leak_per_conn'] for o in objects], 2)} | "
                if objects
                else "n/a | n/a | "
            )
            + " / ".join(_range([r.get(key) for r in rss]) for key in ("before", "connected", "after_close"))
            + " |"
        )
    return lines


def main() -> None:
    """``python -m bench.report RUN.json [RUN.json ...]``: fill docs/performance.md and copy the plots of the last run."""
    import argparse
    import json

    from bench.procs import ROOT

    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--docs", default=str(ROOT / "docs" / "performance.md"))
    parser.add_argument("--plots", default=str(ROOT / "docs" / "bench"))
    args = parser.parse_args()
    runs = [json.loads(Path(path).read_text()) for path in args.runs]
    docs = Path(args.docs)
    text = docs.read_text() if docs.exists() else "<!-- bench:begin -->\n<!-- bench:end -->\n"
    head, rest = text.split("<!-- bench:begin -->", 1)
    tail = rest.split("<!-- bench:end -->", 1)[1]
    docs.write_text(head + "<!-- bench:begin -->\n" + markdown(runs) + "<!-- bench:end -->" + tail)
    plot_run(runs[-1], Path(args.plots))
    print(f"wrote {docs} and plots in {args.plots}")


if __name__ == "__main__":
    main()
