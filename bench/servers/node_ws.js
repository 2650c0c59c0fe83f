// The Node.js near-physical-limit baseline: a bare `ws` server speaking the same SignalR JSON records as
// bench/servers/raw_ws.py (node-ws in bench/procs.py IMPLS).
//
//     node bench/servers/node_ws.js [--port 0]
//
// Same methods as bench/hubs.py and raw_ws.py (Echo, Broadcast, SendToGroup, SendToUser, JoinGroup, LeaveGroup),
// the user from the `user` query parameter, the handshake answered with `{}` + 0x1E without parsing it. Fan-out
// is one serialization (and one UTF-8 encoding) per send, then the same buffer written to every socket, as
// websockets.broadcast() does. No permessage-deflate. Keep-alive as raw_ws.py: a protocol-level ping to each
// connection every 15 s (SignalR's cadence; per-connection timer), the connection terminated when the pong has
// not come by the next ping; SignalR ping records from the client are parsed and ignored.
// Prints `listening on 127.0.0.1:PORT` once bound. The packages come from bench/package.json (bash bench/run.sh
// installs them into bench/node_modules).
"use strict";

const { WebSocketServer, WebSocket } = require("ws");

const RS = "\x1e";
const PING_INTERVAL_MS = 15000; // SignalR's keep-alive cadence, as raw_ws.py runs websockets' pings
const ALL = new Set();
const GROUPS = new Map();
const USERS = new Map();

function frame(payload) {
  return Buffer.from(JSON.stringify({ type: 1, target: "Receive", arguments: [payload] }) + RS);
}

function broadcast(sockets, data) {
  if (!sockets || sockets.size === 0) {
    return;
  }
  for (const ws of sockets) {
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(data, { binary: false });
    }
  }
}

function add(map, key, ws) {
  let members = map.get(key);
  if (members === undefined) {
    members = new Set();
    map.set(key, members);
  }
  members.add(ws);
}

function discard(map, key, ws) {
  const members = map.get(key);
  if (members !== undefined) {
    members.delete(ws);
  }
}

function dispatch(ws, message, joined) {
  if (message.type !== 1) {
    return;
  }
  const args = message.arguments;
  let result = null;
  switch (message.target) {
    case "Echo":
      result = args[0];
      break;
    case "Broadcast":
      broadcast(ALL, frame(args[0]));
      break;
    case "SendToGroup":
      broadcast(GROUPS.get(args[0]), frame(args[1]));
      break;
    case "SendToUser":
      broadcast(USERS.get(args[0]), frame(args[1]));
      break;
    case "JoinGroup":
      add(GROUPS, args[0], ws);
      joined.add(args[0]);
      result = args[1];
      break;
    case "LeaveGroup":
      discard(GROUPS, args[0], ws);
      joined.delete(args[0]);
      result = args[1];
      break;
    default:
      break;
  }
  if (message.invocationId !== undefined) {
    ws.send(JSON.stringify({ type: 3, invocationId: message.invocationId, result }) + RS);
  }
}

function handle(ws, request) {
  const user = new URL(request.url, "http://127.0.0.1").searchParams.get("user");
  const joined = new Set();
  let handshaken = false;
  let alive = true;
  const pinger = setInterval(() => {
    if (!alive) {
      ws.terminate();
      return;
    }
    alive = false;
    ws.ping();
  }, PING_INTERVAL_MS);
  ws.on("pong", () => {
    alive = true;
  });
  ws.on("message", (data) => {
    if (!handshaken) {
      // The handshake record.
      handshaken = true;
      ws.send("{}" + RS);
      ALL.add(ws);
      if (user) {
        add(USERS, user, ws);
      }
      return;
    }
    for (const record of data.toString().split(RS)) {
      if (record) {
        dispatch(ws, JSON.parse(record), joined);
      }
    }
  });
  ws.on("close", () => {
    clearInterval(pinger);
    ALL.delete(ws);
    if (user) {
      discard(USERS, user, ws);
    }
    for (const group of joined) {
      discard(GROUPS, group, ws);
    }
  });
  ws.on("error", () => {}); // a dropped client: "close" follows
}

function main() {
  const index = process.argv.indexOf("--port");
  const port = index >= 0 ? Number(process.argv[index + 1]) : 0;
  const server = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false, clientTracking: false });
  server.on("connection", handle);
  server.on("listening", () => {
    process.stdout.write(`listening on 127.0.0.1:${server.address().port}\n`);
  });
  process.on("SIGTERM", () => process.exit(0));
}

main();
