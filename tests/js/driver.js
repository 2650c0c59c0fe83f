// Drives official @microsoft/signalr connections for the Python tests.
// Reads one JSON command per line on stdin, answers one JSON line per command on stdout.
"use strict";
const path = require("path");
const readline = require("readline");
const signalR = require(path.join(__dirname, "..", "..", "node_modules", "@microsoft", "signalr"));
const msgpack = require(path.join(__dirname, "..", "..", "node_modules", "@microsoft", "signalr-protocol-msgpack"));

const connections = new Map(); // name -> {connection, events: []}

function reply(id, body) {
  process.stdout.write(JSON.stringify({ id, ...body }) + "\n");
}

async function handle(cmd) {
  const entry = connections.get(cmd.name);
  switch (cmd.op) {
    case "connect": {
      const options = { headers: cmd.headers || {} };
      if (cmd.accessToken) options.accessTokenFactory = () => cmd.accessToken;
      if (cmd.skipNegotiation) {
        options.skipNegotiation = true;
        options.transport = signalR.HttpTransportType.WebSockets;
      }
      // One transport ("WebSockets", "ServerSentEvents", "LongPolling"), or the client's fallback order.
      if (cmd.transport) options.transport = signalR.HttpTransportType[cmd.transport];
      let builder = new signalR.HubConnectionBuilder()
        .withUrl(cmd.url, options)
        .configureLogging(signalR.LogLevel.None);
      if (cmd.protocol === "messagepack") builder = builder.withHubProtocol(new msgpack.MessagePackHubProtocol());
      if (cmd.reconnect) builder = builder.withAutomaticReconnect(cmd.reconnect);
      if (cmd.serverTimeout) builder = builder.withServerTimeout(cmd.serverTimeout);
      if (cmd.stateful) builder = builder.withStatefulReconnect(cmd.stateful === true ? {} : cmd.stateful);
      const connection = builder.build();
      const record = { connection, events: [] };
      for (const target of cmd.events || []) {
        connection.on(target, (...args) => record.events.push({ target, args }));
      }
      // Client results: {"Target": {"value": v} | {"throw": "message"} | {"hang": true}}.
      for (const [target, answer] of Object.entries(cmd.results || {})) {
        connection.on(target, (...args) => {
          record.events.push({ target: "__asked__", args: [target, ...args] });
          if (answer.throw) throw new Error(answer.throw);
          if (answer.hang) return new Promise(() => {});
          return answer.value;
        });
      }
      connection.onclose((error) => record.events.push({ target: "__closed__", args: [error ? error.message : null] }));
      connection.onreconnecting(() => record.events.push({ target: "__reconnecting__", args: [] }));
      connection.onreconnected((id) => record.events.push({ target: "__reconnected__", args: [id] }));
      connections.set(cmd.name, record);
      await connection.start();
      const transport = connection.connection && connection.connection.transport;
      return { connectionId: connection.connectionId, transport: transport ? transport.constructor.name : null };
    }
    case "invoke":
      return { result: await entry.connection.invoke(cmd.method, ...(cmd.args || [])) };
    case "send":
      await entry.connection.send(cmd.method, ...(cmd.args || []));
      return {};
    case "spam": {
      // Fire-and-forget sends in the background: {seq, t} payloads every `interval` ms.
      // `tolerant`: a failed send (the connection is reconnecting) skips its number instead of
      // stopping; "spam_status" reports them, "spam_stop" ends the loop early.
      const spam = { next: 0, sent: [], skipped: [], stop: false, done: false };
      entry.spam = spam;
      (async () => {
        for (let seq = 0; seq < cmd.count && !spam.stop; seq++) {
          spam.next = seq;
          const payload = JSON.stringify({ seq, t: Date.now() });
          if (cmd.tolerant) {
            try {
              await entry.connection.send(cmd.method, cmd.group, payload);
              spam.sent.push(seq);
            } catch (error) {
              spam.skipped.push(seq);
            }
          } else {
            await entry.connection.send(cmd.method, cmd.group, payload);
            spam.sent.push(seq);
          }
          spam.next = seq + 1;
          await new Promise((resolve) => setTimeout(resolve, cmd.interval));
        }
        spam.done = true;
        entry.events.push({ target: "__spam_done__", args: [] });
      })().catch((error) => {
        spam.done = true;
        entry.events.push({ target: "__spam_error__", args: [String(error)] });
      });
      return {};
    }
    case "spam_status": {
      // How far a spam got: the next number, the numbers sent and the numbers skipped (tolerant mode).
      const spam = entry.spam;
      return spam
        ? { next: spam.next, sent: spam.sent.length, lastSent: spam.sent.length ? spam.sent[spam.sent.length - 1] : null,
            skipped: spam.skipped, done: spam.done, sentNumbers: cmd.full ? spam.sent : undefined }
        : { next: null };
    }
    case "spam_stop": {
      // End a spam early; answers once its loop has ended (so nothing is sent after this).
      const spam = entry.spam;
      if (spam) {
        spam.stop = true;
        while (!spam.done) await new Promise((resolve) => setTimeout(resolve, 5));
      }
      return {};
    }
    case "stream": {
      // connection.stream(method, ...args): collect the items; dispose the subscription after
      // `cancelAfter` items (a CancelInvocation), then keep listening `settle` ms for stray items.
      const items = [];
      let settled = false;
      let error = null;
      let cancelledAt = null;
      let finish;
      const finished = new Promise((resolve) => (finish = resolve));
      const subscription = entry.connection.stream(cmd.method, ...(cmd.args || [])).subscribe({
        next: (item) => {
          items.push(item);
          if (cmd.cancelAfter && items.length === cmd.cancelAfter && cancelledAt === null) {
            cancelledAt = items.length;
            subscription.dispose();
            setTimeout(finish, cmd.settle || 300);
          }
        },
        complete: () => {
          settled = true;
          finish();
        },
        error: (e) => {
          error = e && e.message ? e.message : String(e);
          finish();
        },
      });
      await Promise.race([finished, new Promise((resolve) => setTimeout(resolve, cmd.streamTimeout || cmd.timeout || 10000))]);
      return { items, error, completed: settled, cancelledAt };
    }
    case "upload": {
      // invoke(method, ...args, subject): stream `items` to the server, then complete; the method's result.
      const subject = new signalR.Subject();
      const result = entry.connection.invoke(cmd.method, ...(cmd.args || []), subject);
      for (const item of cmd.items) subject.next(item);
      subject.complete();
      return { result: await result };
    }
    case "events": {
      const events = entry.events.splice(0);
      return { events };
    }
    case "state":
      return { state: entry.connection.state };
    case "stop":
      await entry.connection.stop();
      return {};
    case "exit":
      for (const { connection } of connections.values()) await connection.stop().catch(() => {});
      setImmediate(() => process.exit(0));
      return {};
    default:
      throw new Error("unknown op " + cmd.op);
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    return;
  }
  handle(cmd).then(
    (body) => reply(cmd.id, { ok: true, ...body }),
    (error) => reply(cmd.id, { ok: false, error: error && error.message ? error.message : String(error) }),
  );
});
rl.on("close", () => process.exit(0));
