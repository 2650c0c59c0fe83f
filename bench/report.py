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
        top = 1.0
        for impl, result in impls.items():
            steps = result.get("steps", [])
            if name == "users":
                steps = [s for s in steps if s.get("devices") == 5]
            if not steps:
                continue
            x = [s["offered_deliveries_per_s"] for s in steps]
            top = max(top, *x)
            line = left.plot(x, [s["delivered_per_s"] for s in steps], marker="o", label=impl)[0]
            right.plot(
                x, [max(0.01, s["fanout_ms"]["p99"]) for s in steps], marker="o", color=line.get_color(), label=impl
            )
            for s, xi in zip(steps, x, strict=True):
                if s.get("client_bound"):  # client-bound points: hollow marker
                    left.plot(
                        [xi], [s["delivered_per_s"]], marker="o", markersize=11, markerfacecolor="none", color="black"
                    )
        left.plot([1, top], [1, top], linestyle="--", color="grey", linewidth=0.8)
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
