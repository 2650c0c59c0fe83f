"""The demo chat site in a real browser: Debian's Chromium, driven by Playwright, against daphne.

Each device is its own browser context (its own cookies and SignalR connection); the pages use
the official ``@microsoft/signalr`` browser client served from node_modules.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.demo_site import CHROMIUM_ARGS, DemoSite, chromium_path, log_in, open_room, screenshot_dir, side_by_side

DESKTOP = {"viewport": {"width": 1000, "height": 720}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 1}


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


def _site(tmp_path_factory: pytest.TempPathFactory) -> DemoSite:
    site = DemoSite(tmp_path_factory.mktemp("demo"))
    site.start()
    return site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSite]:
    site = _site(tmp_path_factory)
    yield site
    site.stop()


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[Any]]:
    """Close every context (device) a test opened, so no connection outlives its test."""
    before = set(browser.contexts)
    opened: list[Any] = []
    yield opened
    for context in browser.contexts:
        if context not in before:
            context.close()


def record_frames(page: Page) -> list[str]:
    """Every SignalR frame the page receives from now on (what the server sent, before any page logic)."""
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
    return frames


def wait_until(page: Page, predicate: Any, timeout: float = 5.0) -> None:
    """Wait for ``predicate`` while letting Playwright deliver events (page.wait_for_timeout pumps them)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        page.wait_for_timeout(20)


def messages_of(page: Page) -> list[str]:
    return page.locator("#messages li .text").all_inner_texts()


def send(page: Page, text: str) -> None:
    page.get_by_label("Message to").fill(text)
    page.get_by_role("button", name="Send", exact=True).click()


def test_room_list_shows_rooms_access_and_people(browser: Browser, site: DemoSite, contexts: list[Any]) -> None:
    bob = log_in(browser, site, "bob")
    open_room(bob, site, "lobby")
    alice = log_in(browser, site, "alice")
    cards = alice.locator(".room-card")
    expect(cards).to_have_count(5)
    # Open rooms first, then restricted ones with whether alice may enter.
    assert cards.locator(".room-link").all_inner_texts() == [
        "Lobby",
        "Random",
        "Staff room",
        "VIP backstage",
        "VIP lounge",
    ]
    lounge = alice.locator(".room-card[data-room=vip-lounge]")
    expect(lounge.locator(".badge")).to_have_text("Restricted · you have access")
    expect(lounge.get_by_role("link", name="VIP lounge")).to_be_visible()
    backstage = alice.locator(".room-card[data-room=vip-backstage]")
    expect(backstage.locator(".badge")).to_have_text("Restricted · no access")
    expect(backstage.get_by_role("link")).to_have_count(0)
    expect(alice.locator(".room-card[data-room=lobby] .people")).to_have_text("1 person here now")
    # No access: the room page refuses and says so (it never shows the history).
    response = alice.goto(f"{site.url}/rooms/vip-backstage/")
    assert response is not None and response.status == 403
    expect(alice.get_by_role("alert")).to_contain_text("restricted and you have no grant")
    # Non-staff see no admin link; staff do.
    expect(alice.get_by_role("link", name="Admin", exact=True)).to_have_count(0)
    admin = log_in(browser, site, "admin")
    expect(admin.get_by_role("link", name="Admin", exact=True)).to_be_visible()


def test_two_devices_of_alice_and_bob_chat_and_private_messages(
    browser: Browser, site: DemoSite, contexts: list[Any]
) -> None:
    desktop = log_in(browser, site, "alice", **DESKTOP)
    phone = log_in(browser, site, "alice", **PHONE)
    bob = log_in(browser, site, "bob", **DESKTOP)
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

    # The history is in the database: a fresh page shows it.
    carol = log_in(browser, site, "carol")
    open_room(carol, site, "lobby")
    assert messages_of(carol)[-2:] == ["Hello from bob, lobby", "alice here, from my phone"]

    shots = screenshot_dir()
    desktop.wait_for_timeout(200)  # let the presence chips settle for the picture
    side_by_side(
        browser,
        [("alice — desktop", desktop.screenshot()), ("alice — phone", phone.screenshot())],
        shots / "room-two-devices.png",
    )
    assert (shots / "room-two-devices.png").stat().st_size > 10_000


def test_join_and_leave_notices_count_people_not_tabs(browser: Browser, site: DemoSite, contexts: list[Any]) -> None:
    watcher = log_in(browser, site, "carol")
    watcher_frames = record_frames(watcher)
    open_room(watcher, site, "random")
    first = log_in(browser, site, "alice")
    open_room(first, site, "random")
    expect(watcher.locator("#messages li.notice").last).to_have_text("alice joined the room.")
    second = log_in(browser, site, "alice")
    open_room(second, site, "random")
    expect(watcher.locator("#presence-count")).to_have_text("2 people in this room")

    before = len([f for f in watcher_frames if '"Presence"' in f])
    second.context.close()  # alice still has a tab open: she has not left
    wait_until(watcher, lambda: len([f for f in watcher_frames if '"Presence"' in f]) > before)  # the server recounted
    expect(watcher.locator("#presence li")).to_have_text(["alice", "carol"])
    assert watcher.locator("#messages li.notice").all_inner_texts().count("alice left the room.") == 0

    first.context.close()
    expect(watcher.locator("#messages li.notice").last).to_have_text("alice left the room.")
    expect(watcher.locator("#presence-count")).to_have_text("1 person in this room")


def test_a_burst_of_posts_is_rate_limited_and_other_users_are_not(
    browser: Browser, site: DemoSite, contexts: list[Any]
) -> None:
    """The demo's ChatHub uses RateLimitFilter: 25 posts at once from alice's page are cut at her
    10-message burst (the rest fail, not stored), the page says why, and bob posts as usual."""
    alice = log_in(browser, site, "alice")
    open_room(alice, site, "random")
    bob = log_in(browser, site, "bob")
    open_room(bob, site, "random")
    alice.evaluate(
        """() => {
            for (let i = 0; i < 25; i++) {
                document.getElementById("message").value = "burst " + i;
                document.getElementById("message-form").requestSubmit();
            }
        }"""
    )
    expect(alice.locator("#status")).to_contain_text("Too many calls: at most 10 a second.")
    wait_until(bob, lambda: len([m for m in messages_of(bob) if m.startswith("burst ")]) >= 10)
    bob.wait_for_timeout(300)
    burst = [m for m in messages_of(bob) if m.startswith("burst ")]
    assert 10 <= len(burst) < 25, burst  # the bucket refills at 10 a second while the burst is handled
    send(bob, "bob is not limited by alice's burst")
    expect(alice.locator("#messages li .text").last).to_have_text("bob is not limited by alice's burst")


def test_html_in_messages_and_room_names_is_shown_as_text(
    browser: Browser, site: DemoSite, contexts: list[Any]
) -> None:
    admin = log_in(browser, site, "admin")
    # A room whose name is HTML, created in the admin.
    admin.goto(f"{site.url}/admin/chat/room/add/")
    admin.get_by_label("Name").fill("<b>bold</b> room")
    admin.get_by_label("Name").press("Tab")
    expect(admin.get_by_label("Slug")).to_have_value("bboldb-room")  # the admin's prepopulated slug
    admin.get_by_role("button", name="Save", exact=True).click()
    expect(admin.locator(".messagelist")).to_contain_text("was added successfully")

    alice = log_in(browser, site, "alice")
    expect(alice.locator(".room-card[data-room=bboldb-room] .room-link")).to_have_text("<b>bold</b> room")
    bob = log_in(browser, site, "bob")
    for page in (alice, bob):
        open_room(page, site, "bboldb-room")
    payload = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    send(bob, payload)
    expect(alice.locator("#messages li.message .text").last).to_have_text(payload)
    alice.reload()  # and from the stored history
    open_room(alice, site, "bboldb-room")
    expect(alice.locator("#messages li.message .text").last).to_have_text(payload)
    for page in (alice, bob):
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#messages script, #messages img, h1 b").count() == 0


def test_page_is_usable_at_phone_width_with_labels_and_focus_order(
    browser: Browser, site: DemoSite, contexts: list[Any]
) -> None:
    phone = log_in(browser, site, "alice", **PHONE)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    open_room(phone, site, "lobby")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    for label in ("Message to Lobby", "To", "Private message"):  # exact labels
        expect(phone.get_by_label(label, exact=True)).to_be_visible()
    phone.get_by_label("Message to Lobby").focus()
    phone.keyboard.press("Tab")
    assert phone.evaluate("document.activeElement.id") == "send"
    phone.keyboard.press("Tab")
    assert phone.evaluate("document.activeElement.id") == "pm-user"
    phone.get_by_label("Message to Lobby").fill("sent with the Enter key")
    phone.get_by_label("Message to Lobby").press("Enter")
    expect(phone.locator("#messages li.message .text").last).to_have_text("sent with the Enter key")
    expect(phone.get_by_label("Message to Lobby")).to_have_value("")


def test_admin_revocation_reaches_both_of_alices_windows(browser: Browser, site: DemoSite, contexts: list[Any]) -> None:
    desktop = log_in(browser, site, "alice", **DESKTOP)
    phone = log_in(browser, site, "alice", **PHONE)
    bob = log_in(browser, site, "bob", **DESKTOP)
    frames = {page: record_frames(page) for page in (desktop, phone)}
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
    print(f"revocation notice in both of alice's windows {elapsed * 1000:.0f} ms after the admin's click")
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
        # Not merely hidden by the page: the server sent nothing more from the room.
        assert any("before the revocation" in frame for frame in frames[page])
        assert not any("after the revocation" in frame for frame in frames[page])
    # And alice cannot get back in.
    desktop.goto(f"{site.url}/rooms/vip-lounge/")
    expect(desktop.get_by_role("alert")).to_contain_text("no grant")

    shots = screenshot_dir()
    side_by_side(
        browser,
        [("admin — Revoke now", admin.screenshot()), ("alice — phone", phone.screenshot())],
        shots / "admin-revocation.png",
    )
    assert (shots / "admin-revocation.png").stat().st_size > 10_000


def test_pages_reconnect_and_rejoin_after_a_server_restart(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory, contexts: list[Any]
) -> None:
    site = _site(tmp_path_factory)
    try:
        alice = log_in(browser, site, "alice")
        bob = log_in(browser, site, "bob")
        for page in (alice, bob):
            open_room(page, site, "lobby")
        send(bob, "before the restart")
        expect(alice.locator("#messages li.message .text").last).to_have_text("before the restart")

        site.kill()
        for page in (alice, bob):
            expect(page.locator("#status")).to_have_text("Connection lost. Reconnecting…", timeout=10_000)
            expect(page.get_by_label("Message to Lobby")).to_be_disabled()
        site.start()
        for page in (alice, bob):
            expect(page.locator("#status")).to_have_text("Reconnected, and rejoined the room.", timeout=15_000)
            expect(page.locator("#presence li")).to_have_text(["alice", "bob"])
        # Rejoined by themselves: no reload, and messages flow again.
        send(bob, "after the restart")
        expect(alice.locator("#messages li.message .text").last).to_have_text("after the restart")
        assert messages_of(alice).count("before the restart") == 1
    finally:
        site.stop()


def test_reconnecting_page_catches_up_on_messages_it_missed(
    browser: Browser, site: DemoSite, contexts: list[Any]
) -> None:
    alice = log_in(browser, site, "alice")
    bob = log_in(browser, site, "bob")
    # Stand between alice's page and the server, so that her socket can be cut and kept down.
    network: dict[str, Any] = {"down": False, "sockets": []}

    def route(ws: Any) -> None:
        if network["down"]:
            ws.close()
            return
        network["sockets"].append((ws, ws.connect_to_server()))

    alice.route_web_socket(re.compile(r".*/chatHub.*"), route)
    # The client falls back to SSE or long polling when its WebSocket fails: keep HTTP to the hub down too.
    alice.route(re.compile(r".*/chatHub.*"), lambda r: r.abort() if network["down"] else r.continue_())
    for page in (alice, bob):
        open_room(page, site, "random")
    send(bob, "while alice is still here")
    expect(alice.locator("#messages li.message .text").last).to_have_text("while alice is still here")

    network["down"] = True
    for page_side, server_side in network["sockets"]:
        page_side.close()
        server_side.close()
    expect(alice.locator("#status")).to_have_text("Connection lost. Reconnecting…")
    missed = [f"missed {n} while alice was away" for n in range(3)]
    for text in missed:
        send(bob, text)
        expect(bob.locator("#messages li.message .text").last).to_have_text(text)
    alice.wait_for_timeout(700)  # a reconnect attempt or two fail while the network is down
    assert not any(text in messages_of(alice) for text in missed)

    network["down"] = False
    expect(alice.locator("#status")).to_have_text("Reconnected, and rejoined the room.", timeout=15_000)
    assert messages_of(alice)[-4:] == ["while alice is still here", *missed]
    send(bob, "and live again")
    expect(alice.locator("#messages li.message .text").last).to_have_text("and live again")


def test_screenshots_are_current_in_docs() -> None:
    """The README shows docs/screenshots; they must exist (refresh them with SIGNALR_SCREENSHOTS_DIR)."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    for name in ("room-two-devices.png", "admin-revocation.png"):
        assert (docs / name).stat().st_size > 10_000, name


def test_admin_lists_live_connections_and_disconnects_a_user(
    browser: Browser, site: DemoSite, contexts: list[Any]
) -> None:
    desktop = log_in(browser, site, "alice")
    phone = log_in(browser, site, "alice", **PHONE)
    carol = log_in(browser, site, "carol")
    for page in (desktop, phone, carol):
        open_room(page, site, "random")
    admin = log_in(browser, site, "admin", **DESKTOP)
    admin.goto(f"{site.url}/admin/")
    admin.get_by_role("link", name="Live connections").click()
    expect(admin.locator("#live-summary")).to_contain_text("3 live connections")
    users = admin.locator("#live-users tbody tr")
    expect(users.filter(has_text="alice").locator("td").nth(1)).to_have_text("2")
    expect(users.filter(has_text="carol").locator("td").nth(1)).to_have_text("1")
    random_row = admin.locator("#live-groups tbody tr", has_text="random")
    expect(random_row.locator("td")).to_have_text(["random", "3", "2"])  # 3 connections, 2 people

    users.filter(has_text="carol").get_by_role("button", name="Disconnect every connection of carol").click()
    expect(admin.locator(".messagelist")).to_contain_text("Disconnected 1 connection(s) of carol.")
    expect(carol.locator("#status")).to_contain_text("Disconnected by an administrator.")
    expect(carol.get_by_label("Message to Random")).to_be_disabled()
    # alice is untouched, and sees carol leave.
    expect(desktop.locator("#messages li.notice").last).to_have_text("carol left the room.")

    def two_left() -> bool:  # the socket closes just after the redirect: look again until it is gone
        admin.reload()
        return "2 live connections" in admin.locator("#live-summary").inner_text()

    wait_until(admin, two_left)
