"""The demo chat site in Chromium when the page cannot use WebSockets: the official browser client falls back.

``@microsoft/signalr`` picks the first transport of the negotiate response that the page supports,
and it decides "supported" from ``typeof WebSocket`` / ``typeof EventSource`` when the connection
is built (``HttpConnection`` constructor, then ``_resolveTransportOrError``). An init script removes
those constructors before any of the page's scripts run, so the client itself skips WebSockets
(and Server-Sent Events) although the server offers all three transports. Which transport carried
the connection is proven from the network, never from the page.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Request, expect

from tests.browser import test_browser as base
from tests.browser.test_browser import DESKTOP, PHONE, messages_of, send
from tests.demo_site import DemoSite, log_in, open_room

# The Chromium, Playwright and "close what the test opened" fixtures of test_browser.py.
playwright = base.playwright
browser = base.browser
contexts = base.contexts

#: What each fallback removes from the page before its scripts run.
FALLBACKS = {
    "sse": "window.WebSocket = undefined;",
    "long-polling": "window.WebSocket = undefined; window.EventSource = undefined;",
}
NEGOTIATE = re.compile(r"/chatHub/negotiate\?negotiateVersion=1(&useStatefulReconnect=true)?$")  # (room.js asks for it)
STREAM = re.compile(r"/chatHub\?id=([^&]+)$")  # the SSE stream (the client's sends are POSTs to the same URL)
POLL = re.compile(r"/chatHub\?id=([^&]+)&_=\d+$")  # a long poll: the client adds a cache-busting &_=<ms>


def token_in(request: Request) -> str:
    """The connection token in the URL of a request to the hub's connection (``?id=``)."""
    match = STREAM.search(request.url) or POLL.search(request.url)
    assert match, request.url
    return match.group(1)


@pytest.fixture(scope="module", params=list(FALLBACKS))
def fallback(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def site(fallback: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSite]:
    """A fresh demo site (database) per fallback: each revokes alice's one grant to the VIP lounge."""
    site = base._site(tmp_path_factory)
    yield site
    site.stop()


class Wire:
    """What one page did on the network towards the hub (Playwright's events, and Chromium's for SSE data)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[Request] = []
        self.finished: list[Request] = []
        self.websockets: list[Any] = []
        self.sse_data: list[str] = []
        page.on("request", lambda request: self.requests.append(request) if "/chatHub" in request.url else None)
        page.on("requestfinished", lambda request: self.finished.append(request) if "/chatHub" in request.url else None)
        page.on("websocket", lambda ws: self.websockets.append(ws))
        # Playwright does not expose the events of an open SSE response; Chromium's DevTools protocol does.
        cdp = page.context.new_cdp_session(page)
        cdp.on("Network.eventSourceMessageReceived", lambda event: self.sse_data.append(event["data"]))
        cdp.send("Network.enable")

    def gets(self, pattern: re.Pattern[str]) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and pattern.search(r.url)]

    def received(self) -> list[str]:
        """Every SignalR payload the server sent the page: the SSE events, or the bodies of finished polls."""
        polls = [r for r in self.finished if r.method == "GET" and POLL.search(r.url)]
        bodies = [response.text() for r in polls if (response := r.response()) is not None]
        return self.sse_data + bodies

    def assert_transport(self, fallback: str) -> None:
        """The server offered all three transports, and the page used the fallback (and nothing else)."""
        negotiates = [r for r in self.requests if r.method == "POST" and NEGOTIATE.search(r.url)]
        assert len(negotiates) == 1, [r.url for r in negotiates]
        response = negotiates[0].response()
        assert response is not None and response.status == 200
        negotiated = response.json()
        offered = {t["transport"]: t["transferFormats"] for t in negotiated["availableTransports"]}
        assert offered.keys() == {"WebSockets", "ServerSentEvents", "LongPolling"}, offered
        token = negotiated["connectionToken"]
        assert self.websockets == [], "the page opened a WebSocket"
        streams, polls = self.gets(STREAM), self.gets(POLL)
        if fallback == "sse":
            assert polls == [], "the page long-polled"
            assert len(streams) == 1, [r.url for r in streams]  # one stream for the whole test: no reconnect
            stream = streams[0]
            assert token_in(stream) == token
            assert stream.resource_type == "eventsource"
            assert stream.all_headers()["accept"] == "text/event-stream"
            stream_response = stream.response()
            assert stream_response is not None and stream_response.status == 200
            assert stream_response.all_headers()["content-type"].startswith("text/event-stream")
            assert self.sse_data, "no event came down the stream"
        else:
            assert streams == [], "the page opened an SSE stream"
            assert not [r for r in self.requests if r.resource_type == "eventsource"]
            assert len(polls) >= 3, [r.url for r in polls]  # the handshake poll, then a poll after each delivery
            assert {token_in(r) for r in polls} == {token}
            assert all(r.resource_type == "fetch" for r in polls)
        # The page's invocations went up as POSTs to the same connection, whatever the transport.
        sends = [r for r in self.requests if r.method == "POST" and STREAM.search(r.url)]
        assert sends and {token_in(r) for r in sends} == {token}
        # (And the page indeed lacked what the init script removed, and only that.)
        kinds = self.page.evaluate("({WebSocket: typeof WebSocket, EventSource: typeof EventSource})")
        assert kinds == {"WebSocket": "undefined", "EventSource": "function" if fallback == "sse" else "undefined"}


def device(browser: Browser, site: DemoSite, username: str, fallback: str, **context_args: Any) -> tuple[Page, Wire]:
    """A logged-in device whose pages lack the transports ``fallback`` removes, with its hub traffic recorded."""
    page = log_in(browser, site, username, **context_args)
    page.add_init_script(FALLBACKS[fallback])  # before any script of every later navigation
    return page, Wire(page)


def test_two_devices_of_alice_and_bob_chat_and_private_messages_on_a_fallback(
    browser: Browser, site: DemoSite, fallback: str, contexts: list[Any]
) -> None:
    desktop, desktop_wire = device(browser, site, "alice", fallback, **DESKTOP)
    phone, phone_wire = device(browser, site, "alice", fallback, **PHONE)
    bob, bob_wire = device(browser, site, "bob", fallback, **DESKTOP)
    for page in (desktop, phone, bob):
        open_room(page, site, "lobby")
    # People, not tabs: alice's two devices count once.
    for page in (desktop, phone, bob):
        expect(page.locator("#presence-count")).to_have_text("2 people in this room")
        expect(page.locator("#presence li")).to_have_text(["alice", "bob"])

    send(bob, "Hello from bob, lobby")
    for page in (desktop, phone, bob):
        expect(page.locator("#messages li.message").last).to_contain_text("Hello from bob, lobby")
    send(phone, "alice here, from my phone")
    for page in (desktop, bob):
        expect(page.locator("#messages li.message").last).to_contain_text("alice here, from my phone")

    bob.get_by_label("To", exact=True).fill("alice")
    bob.get_by_label("Private message", exact=True).fill("psst, alice only")
    bob.get_by_role("button", name="Send privately").click()
    expect(bob.locator("#pm-status")).to_have_text("Sent privately to alice.")
    for page in (desktop, phone):
        expect(page.locator("#private-messages li")).to_have_count(1)
        expect(page.locator("#private-messages li")).to_contain_text("From bob")
        expect(page.locator("#private-messages li .text")).to_have_text("psst, alice only")
    expect(bob.locator("#private-messages li")).to_have_count(0)
    assert "psst" not in bob.locator("#messages").inner_text()

    # Errors are shown, not swallowed.
    bob.get_by_label("To", exact=True).fill("nobody-by-that-name")
    bob.get_by_label("Private message", exact=True).fill("hello?")
    bob.get_by_role("button", name="Send privately").click()
    expect(bob.locator("#pm-status")).to_contain_text("There is no user called 'nobody-by-that-name'")

    for wire in (desktop_wire, phone_wire, bob_wire):
        wire.assert_transport(fallback)
    # The private message came over the fallback to both of alice's devices, and never to bob's.
    for wire in (desktop_wire, phone_wire):
        assert any("psst, alice only" in payload for payload in wire.received())
    assert any("Hello from bob, lobby" in payload for payload in bob_wire.received())
    assert not any("psst" in payload for payload in bob_wire.received())


def test_admin_revocation_reaches_both_of_alices_windows_on_a_fallback(
    browser: Browser, site: DemoSite, fallback: str, contexts: list[Any]
) -> None:
    desktop, desktop_wire = device(browser, site, "alice", fallback, **DESKTOP)
    phone, phone_wire = device(browser, site, "alice", fallback, **PHONE)
    bob, bob_wire = device(browser, site, "bob", fallback, **DESKTOP)
    wires = {desktop: desktop_wire, phone: phone_wire}
    for page in (desktop, phone, bob):
        open_room(page, site, "vip-lounge")
    send(bob, "before the revocation")
    for page in (desktop, phone):
        expect(page.locator("#messages li.message .text").last).to_have_text("before the revocation")

    admin = log_in(browser, site, "admin", **DESKTOP)
    admin.get_by_role("link", name="Admin", exact=True).click()
    admin.get_by_role("link", name="Group access grants").click()
    row = admin.locator("#result_list tbody tr", has_text="vip-lounge").filter(has_text="alice")
    expect(row).to_have_count(1)
    row.locator("input.action-select").check()
    admin.locator("select[name=action]").select_option("revoke_now")
    started = time.monotonic()
    admin.get_by_role("button", name="Go").click()
    for page in (desktop, phone):
        expect(page.get_by_role("alert")).to_have_text(
            "Your access to this room ended: a staff member revoked your grant. This room no longer updates.",
            timeout=1000,
        )
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"the revocation notice took {elapsed:.2f} s to reach both windows"
    print(f"{fallback}: revocation notice in both of alice's windows {elapsed * 1000:.0f} ms after the admin's click")
    expect(admin.locator(".messagelist")).to_contain_text("Revoked 1 grant")
    for page in (desktop, phone):
        expect(page.get_by_label("Message to VIP lounge")).to_be_disabled()
    # bob (who holds access through the vips auth group) sees alice go, and keeps the room.
    expect(bob.locator("#presence li")).to_have_text(["bob"])
    expect(bob.locator("#messages li.notice").last).to_have_text("alice left the room.")
    send(bob, "after the revocation")
    expect(bob.locator("#messages li.message .text").last).to_have_text("after the revocation")
    bob.wait_for_timeout(500)
    for page in (desktop, phone):
        assert "after the revocation" not in messages_of(page)
        # Not merely hidden by the page: the server sent nothing more from the room over the fallback.
        received = wires[page].received()
        assert any("before the revocation" in payload for payload in received)
        assert any("GroupAccessRevoked" in payload for payload in received)
        assert not any("after the revocation" in payload for payload in received)
    for wire in (desktop_wire, phone_wire, bob_wire):
        wire.assert_transport(fallback)
    # And alice cannot get back in.
    desktop.goto(f"{site.url}/rooms/vip-lounge/")
    expect(desktop.get_by_role("alert")).to_contain_text("no grant")
