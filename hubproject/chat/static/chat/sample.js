// The ASP.NET Core docs' groups sample, against /chatHub, with the official @microsoft/signalr client.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const joined = new Set();
  const show = (text, kind) => {
    const li = document.createElement("li");
    li.textContent = text; // never innerHTML: chat text is untrusted
    if (kind) li.className = kind;
    $("messages").appendChild(li);
  };
  const status = (text) => { $("status").textContent = text; };

  const connection = new signalR.HubConnectionBuilder()
    .withUrl("/chatHub")
    .withAutomaticReconnect()
    .build();

  connection.on("Send", (message) => show(message));
  connection.on("ReceiveMessage", (message) => show("Private: " + message, "private"));
  connection.on("GroupAccessRevoked", (room, reason) => {
    joined.delete(room);
    show("Your access to " + room + " ended (" + reason + "): it no longer updates here.", "error");
  });
  connection.onreconnecting(() => status("Reconnecting…"));
  connection.onreconnected(async () => {
    // Group membership does not survive a reconnect in SignalR: join the rooms again.
    for (const room of joined) await connection.invoke("AddToGroup", room);
    status("Reconnected.");
  });
  connection.onclose((error) => status(error ? "Disconnected: " + error.message : "Disconnected."));

  const run = (promise) => promise.catch((err) => show("Error: " + err.message, "error"));
  $("join").addEventListener("click", () => {
    const room = $("group-name").value;
    run(connection.invoke("AddToGroup", room).then(() => joined.add(room)));
  });
  $("leave").addEventListener("click", () => {
    const room = $("group-name").value;
    run(connection.invoke("RemoveFromGroup", room).then(() => joined.delete(room)));
  });
  $("message-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run(connection.invoke("SendMessageToGroup", $("group-name").value, $("message").value));
    $("message").value = "";
  });
  $("private-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run(connection.invoke("SendPrivateMessage", $("pm-user").value, $("pm-message").value));
    $("pm-message").value = "";
  });

  connection.start().then(() => status("Connected.")).catch((err) => status("Could not connect: " + err.message));
})();
