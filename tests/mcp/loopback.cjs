// Preload (`node -r tests/mcp/loopback.cjs server.js`) that keeps test servers off the network:
// every TCP server the program starts listens on 127.0.0.1, whatever host (or none) it asked for.
// @modelcontextprotocol/server-everything, for one, binds all interfaces.
//
// Once listening, it writes `listening on http://127.0.0.1:PORT` to stderr, so a harness can
// start the program with PORT=0 and read the port it got.
"use strict";

const net = require("net");

const LOOPBACK = "127.0.0.1";
const listen = net.Server.prototype.listen;

function isPort(value) {
  return typeof value === "number" || (typeof value === "string" && /^\d+$/.test(value));
}

net.Server.prototype.listen = function (...args) {
  const [first] = args;
  if (args.length === 0 || typeof first === "function") {
    // listen([callback]): a random port on every interface.
    args.unshift(0, LOOPBACK);
  } else if (isPort(first)) {
    // listen(port[, host][, backlog][, callback])
    if (typeof args[1] === "string") {
      args[1] = LOOPBACK;
    } else {
      args.splice(1, 0, LOOPBACK);
    }
  } else if (first !== null && typeof first === "object" && !("path" in first) && !("fd" in first)) {
    // listen({ port, host, ... }[, callback]); handles and Unix sockets are left alone.
    if (!("_handle" in first)) {
      args[0] = { ...first, host: LOOPBACK };
    }
  }
  this.once("listening", () => {
    const address = this.address();
    if (address && typeof address === "object") {
      process.stderr.write(`listening on http://${address.address}:${address.port}\n`);
    }
  });
  return listen.apply(this, args);
};
