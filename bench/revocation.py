"""Revocation latency: from the revoking request to the last device's ``GroupAccessRevoked``.

    .venv/bin/python bench/revocation.py [--devices 5] [--rounds 30]

A real daphne serves the test project on a free loopback port, with a fresh SQLite database.
One user holds a grant for "vip-bench" and has ``--devices`` WebSocket connections (bearer
token in ``access_token``, as the browser client sends it), all in that group. Each round
re-grants, re-joins, then revokes through the ORM inside the server process (the path an admin
action takes) and times until every device has received the revocation event. Results go to
bench/results/revocation.json. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RS = "\x1e"


def _setup_database(db_path: str) -> tuple[str, int]:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ["SIGNALR_TEST_DB"] = db_path
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from signalr_groups.auth.access_tokens import issue_access_token

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user(username="bench", password="x")
    return issue_access_token(user), user.pk


def _grant(user_pk: int) -> int:
    from signalr_groups.models import GroupGrant

    return int(GroupGrant.objects.create(hub="interop", group="vip-bench", user_id=user_pk).pk)


async def _device(url: str) -> object:
    from websockets.asyncio.client import connect

    ws = await connect(url, compression=None)
    await ws.send('{"protocol":"json","version":1}' + RS)
    await ws.recv()
    return ws


async def _invoke(ws: object, target: str, *args: object) -> dict[str, object]:
    await ws.send(json.dumps({"type": 1, "target": target, "arguments": list(args), "invocationId": "1"}) + RS)  # type: ignore[attr-defined]
    while True:
        for record in str(await asyncio.wait_for(ws.recv(), 10)).split(RS):  # type: ignore[attr-defined]
            if record and json.loads(record).get("type") == 3:
                return dict(json.loads(record))


async def _wait_revoked(ws: object) -> float:
    while True:
        for record in str(await asyncio.wait_for(ws.recv(), 10)).split(RS):  # type: ignore[attr-defined]
            if record and json.loads(record).get("target") == "GroupAccessRevoked":
                return time.perf_counter()


async def run(server: object, token: str, user_pk: int, devices: int, rounds: int) -> list[float]:
    from asgiref.sync import sync_to_async

    url = f"{server.ws_url}/interop?access_token={token}"  # type: ignore[attr-defined]
    sockets = [await _device(url) for _ in range(devices)]
    latencies = []
    try:
        for _ in range(rounds):
            grant = await sync_to_async(_grant)(user_pk)
            for ws in sockets:
                assert (await _invoke(ws, "JoinGroup", "vip-bench"))["result"] is True
            waiters = [asyncio.ensure_future(_wait_revoked(ws)) for ws in sockets]
            started = time.perf_counter()
            await sync_to_async(server.post_json)("/test/grant", {"action": "revoke", "grant": grant})  # type: ignore[attr-defined]
            finished = await asyncio.gather(*waiters)
            latencies.append((max(finished) - started) * 1000)
    finally:
        for ws in sockets:
            await ws.close()  # type: ignore[attr-defined]
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="signalr-revocation-"))
    db_path = str(workdir / "bench.sqlite3")
    token, user_pk = _setup_database(db_path)
    from tests.live import ServerProcess

    server = ServerProcess(workdir / "server.log", db_path)
    try:
        latencies = asyncio.run(run(server, token, user_pk, args.devices, args.rounds))
    finally:
        server.stop()
    ordered = sorted(latencies)
    result = {
        "devices": args.devices,
        "rounds": args.rounds,
        "ms_p50": round(statistics.median(ordered), 2),
        "ms_p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "ms_max": round(ordered[-1], 2),
        "measured": "request sent -> last device received GroupAccessRevoked (includes the HTTP round trip and commit)",
    }
    out = ROOT / "bench" / "results" / "revocation.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
