// The Node.js Socket.IO peer: the `socket.io` server with the events and rooms of bench/servers/sio.py
// (node-socketio in bench/procs.py IMPLS).
//
//     node bench/servers/node_sio.js [--port 0]
//
// Engine.io v4 over a WebSocket only (no polling), pings every 15 s with a 30 s timeout, no permessage-deflate.
// `Echo` answers with an ack; `Broadcast`/`SendToGroup`/`SendToUser` emit `Receive` to everyone, room
// `g:<group>` or room `u:<user>`; `JoinGroup`/`LeaveGroup` enter/leave the room and ack the stamp. The user
// comes from the `user` query parameter. Prints `listening on 127.0.0.1:PORT` once bound. The packages come
// from bench/package.json (bash bench/run.sh installs them into bench/node_modules).
"use strict";

const http = require("http");
const { Server } = require("socket.io");

function main() {
  const index = process.argv.indexOf("--port");
  const port = index >= 0 ? Number(process.argv[index + 1]) : 0;
  const server = http.createServer();
  const io = new Server(server, {
    transports: ["websocket"],
    pingInterval: 15000,
    pingTimeout: 30000,
    perMessageDeflate: false,
    httpCompression: false,
    serveClient: false,
  });
  io.on("connection", (socket) => {
    const user = socket.handshake.query.user;
    if (user) {
      socket.join(`u:${user}`);
    }
    socket.on("Echo", (value, ack) => {
      if (typeof ack === "function") {
        ack(value);
      }
    });
    socket.on("Broadcast", (payload) => {
      io.emit("Receive", payload);
    });
    socket.on("SendToGroup", (group, payload) => {
      io.to(`g:${group}`).emit("Receive", payload);
    });
    socket.on("SendToUser", (name, payload) => {
      io.to(`u:${name}`).emit("Receive", payload);
    });
    socket.on("JoinGroup", (group, stamp, ack) => {
      socket.join(`g:${group}`);
      if (typeof ack === "function") {
        ack(stamp);
      }
    });
    socket.on("LeaveGroup", (group, stamp, ack) => {
      socket.leave(`g:${group}`);
      if (typeof ack === "function") {
        ack(stamp);
      }
    });
  });
  server.listen(port, "127.0.0.1", () => {
    process.stdout.write(`listening on 127.0.0.1:${server.address().port}\n`);
  });
  process.on("SIGTERM", () => process.exit(0));
}

main();
