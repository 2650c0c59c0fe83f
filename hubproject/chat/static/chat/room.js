// A chat room page, on the official @microsoft/signalr browser client.
// Every text from the server goes through textContent, never innerHTML: chat text is untrusted.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const page = $("room");
  const ROOM = page.dataset.room;
  const messages = $("messages");
  const shown = new Set([...messages.querySelectorAll("li.message")].map((li) => Number(li.dataset.id)));
  let lastId = Number(messages.dataset.lastId || 0);
  let presence = null; // the last list of users seen (null: none yet, e.g. after a reconnect)
  let presenceAt = 0; // server time of that list: an older snapshot arriving late is ignored
  let revoked = false;

  const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  for (const time of messages.querySelectorAll("time")) time.textContent = clock(time.dateTime);

  const item = (className, parts) => {
    const li = document.createElement("li");
    li.className = className;
    for (const [tag, cls, text, attrs] of parts) {
      const el = document.createElement(tag);
      el.className = cls;
      el.textContent = text;
      for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, value);
      li.appendChild(el);
    }
    return li;
  };
  const scrollDown = (list) => { list.scrollTop = list.scrollHeight; };
  const status = (text) => { $("status").textContent = text; };
  const notice = (text) => {
    messages.appendChild(item("notice", [["span", "text", text]]));
    scrollDown(messages);
  };
  const showMessage = (message) => {
    // Each id once, in id order: a live message can overtake the catch-up of a reconnecting page.
    if (shown.has(message.id)) return;
    shown.add(message.id);
    lastId = Math.max(lastId, message.id);
    const li = item("message", [
      ["span", "author", message.author],
      ["time", "", clock(message.sentAt), { datetime: message.sentAt }],
      ["span", "text", message.text],
    ]);
    li.dataset.id = String(message.id);
    const later = [...messages.querySelectorAll("li.message")].find((other) => Number(other.dataset.id) > message.id);
    messages.insertBefore(li, later || null);
    if (!later) scrollDown(messages);
  };
  const canPost = (enabled) => {
    $("message").disabled = !enabled;
    $("send").disabled = !enabled;
  };
  const showPresence = (users) => {
    if (presence !== null) {
      for (const user of users) if (!presence.includes(user)) notice(user + " joined the room.");
      for (const user of presence) if (!users.includes(user)) notice(user + " left the room.");
    }
    presence = users;
    $("presence-count").textContent = users.length + (users.length === 1 ? " person" : " people") + " in this room";
    const list = $("presence");
    list.replaceChildren(...users.map((user) => item("person", [["span", "name", user]])));
  };
  const alertBox = (text) => {
    const box = $("room-alert");
    box.textContent = text;
    box.hidden = false;
    box.focus(); // the focused input is about to be disabled: keep the keyboard user somewhere useful
  };

  const REASONS = {
    revoked: "a staff member revoked your grant",
    deleted: "your grant was deleted",
    expired: "your grant expired",
    "auth-group-left": "you left the group that gave you access",
    changed: "your grant changed",
  };

  const connection = new signalR.HubConnectionBuilder()
    .withUrl("/chatHub")
    // Keep trying for as long as the page is open (the default gives up after four attempts).
    .withAutomaticReconnect({ nextRetryDelayInMilliseconds: (ctx) => Math.min(500 * 2 ** ctx.previousRetryCount, 3000) })
    // A dropped socket (a laptop waking up, a phone changing networks) resumes the same connection
    // without losing a message, when the server allows it (ALLOW_STATEFUL_RECONNECTS).
    .withStatefulReconnect()
    .build();

  connection.on("RoomMessage", (room, message) => {
    if (room === ROOM && !revoked) showMessage(message);
  });
  connection.on("Presence", (room, users, at) => {
    if (room !== ROOM || revoked || (at || 0) < presenceAt) return;
    presenceAt = at || 0;
    showPresence(users);
  });
  connection.on("PrivateMessage", (message) => {
    const list = $("private-messages");
    list.appendChild(item("message", [
      ["span", "author", "From " + message.from],
      ["time", "", clock(message.sentAt), { datetime: message.sentAt }],
      ["span", "text", message.text],
    ]));
    scrollDown(list);
  });
  const endAccess = (why) => {
    revoked = true;
    canPost(false);
    $("presence").replaceChildren();
    $("presence-count").textContent = "—";
    alertBox("Your access to this room ended: " + why + ". This room no longer updates.");
    status("No longer in this room.");
  };
  connection.on("GroupAccessRevoked", (room, reason) => {
    if (room !== ROOM || revoked) return;
    endAccess(REASONS[reason] || reason); // the server has removed us, and told the others
  });

  const join = async () => {
    const result = await connection.invoke("JoinRoom", ROOM, lastId);
    if (result.gap) notice("Some messages were posted while you were away; only the last ones are shown. Reload the page for the full history.");
    for (const message of result.missed) showMessage(message);
    canPost(true);
  };
  connection.onreconnecting(() => {
    canPost(false);
    status("Connection lost. Reconnecting…");
  });
  connection.onreconnected(async () => {
    presence = null;
    presenceAt = 0;
    if (revoked) {
      status("Reconnected.");
      return;
    }
    try {
      // SignalR does not keep group membership across a reconnect: join again, and fetch what we missed.
      await join();
      status("Reconnected, and rejoined the room.");
    } catch (err) {
      if (/needs a grant/.test(err.message)) {
        endAccess("your grant was revoked or expired while you were disconnected");
      } else {
        status("Reconnected, but could not rejoin the room: " + err.message);
      }
    }
  });
  connection.onclose((error) => {
    canPost(false);
    status(error ? "Disconnected: " + error.message + " Reload the page to connect again." : "Disconnected.");
  });

  $("message-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("message");
    const text = input.value;
    if (!text.trim()) return;
    connection.invoke("SendToRoom", ROOM, text).then(
      () => { input.value = ""; },
      (err) => status("Could not send: " + err.message),
    );
  });
  $("private-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const to = $("pm-user").value.trim();
    const text = $("pm-text");
    connection.invoke("SendPrivate", to, text.value).then(
      () => { text.value = ""; $("pm-status").textContent = "Sent privately to " + to + "."; },
      (err) => { $("pm-status").textContent = "Not sent: " + err.message; },
    );
  });

  connection.start()
    .then(join)
    .then(() => status("Connected."))
    .catch((err) => status("Could not connect: " + err.message));
})();
