"""Two runs side by side, one row per step of every scenario both measured (a before/after regression check).

    python -m bench.compare BEFORE.json AFTER.json [--impls hub-uvicorn,hub-daphne]

Prints a markdown table: per scenario, implementation and step, server CPU µs per delivery, delivered/s, p99 to the
last recipient and the worst loop stall, before -> after; then idle memory and CPU, steady and revocation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

_LABELS = ("group_size", "devices", "variant")


def _label(step: dict[str, Any]) -> str:
    parts = [f"{step['offered_per_s']:g}/s"]
    parts += [f"{key.replace('_size', '')} {step[key]}" for key in _LABELS if key in step]
    return ", ".join(parts)


def _cell(before: Any, after: Any, digits: int = 1) -> str:
    if before is None and after is None:
        return "–"

    def fmt(value: Any) -> str:
        return "–" if value is None else f"{value:,.{digits}f}"

    return f"{fmt(before)} → {fmt(after)}"


def _stall(step: dict[str, Any] | None) -> float | None:
    lag = (step or {}).get("loop_lag")
    return None if not lag else lag.get("max_ms")


def rows(before: dict[str, Any], after: dict[str, Any], impls: set[str] | None) -> list[str]:
    """The markdown lines comparing ``before`` and ``after`` (the runs' JSON)."""
    lines = [
        "| scenario | impl | step | server CPU µs/delivery | delivered/s | p99 to last recipient ms | worst stall ms |",
        "|---|---|---|---|---|---|---|",
    ]
    extra: list[str] = []
    for name, by_impl in before["scenarios"].items():
        if name == "revocation" or not isinstance(by_impl, dict):
            continue
        for impl, result in by_impl.items():
            if impls and impl.split("@")[0] not in impls:
                continue
            other = after["scenarios"].get(name, {}).get(impl)
            if other is None:
                continue
            if name == "idle":
                for old, new in zip(result["plateaus"], other["plateaus"], strict=False):
                    extra.append(
                        f"| idle | {impl} | {old['connections']:,} connections | KiB per connection "
                        f"{_cell(old['kib_per_conn'], new['kib_per_conn'], 2)}, % of a core "
                        f"{_cell(old['idle_cpu_percent_of_core'], new['idle_cpu_percent_of_core'], 2)} |"
                    )
                continue
            if name == "steady":
                old_obj, new_obj = result.get("objects") or {}, other.get("objects") or {}
                extra.append(
                    f"| steady | {impl} | 10,000 connections | worst stall ms {_cell(_stall(result), _stall(other))}, "
                    f"stalls > 20 ms {_cell((result.get('loop_lag') or {}).get('over_20ms'), (other.get('loop_lag') or {}).get('over_20ms'), 0)}, "
                    f"objects left per closed connection {_cell(old_obj.get('leak_per_conn'), new_obj.get('leak_per_conn'), 2)} |"
                )
            new_steps = {_label(step): step for step in other.get("steps", [])}
            for step in result.get("steps", []):
                match = new_steps.get(_label(step))
                if match is None:
                    continue
                lines.append(
                    f"| {name} | {impl} | {_label(step)} "
                    f"| {_cell(step.get('server_cpu_us_per_delivery'), match.get('server_cpu_us_per_delivery'))} "
                    f"| {_cell(step.get('delivered_per_s'), match.get('delivered_per_s'), 0)} "
                    f"| {_cell(step['fanout_ms']['p99'], match['fanout_ms']['p99'])} "
                    f"| {_cell(_stall(step), _stall(match))} |"
                )
    old_rev, new_rev = before["scenarios"].get("revocation"), after["scenarios"].get("revocation")
    if old_rev and new_rev:
        extra.append(f"| revocation | hub-daphne | p99 ms | {_cell(old_rev['ms_p99'], new_rev['ms_p99'])} |")
    if extra:
        lines += ["", "| scenario | impl | size | before → after |", "|---|---|---|---|", *extra]
    return lines


def main() -> None:
    """Print the comparison of two runs."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--impls", default="", help="comma-separated implementations (default: all both ran)")
    args = parser.parse_args()
    impls = set(filter(None, args.impls.split(","))) or None
    before, after = (json.loads(path.read_text()) for path in (args.before, args.after))
    print(
        f"before: {before.get('git_sha')} ({before.get('started')}); after: {after.get('git_sha')} ({after.get('started')})"
    )
    print("\n".join(rows(before, after, impls)))


if __name__ == "__main__":
    main()
