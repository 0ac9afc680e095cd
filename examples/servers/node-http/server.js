// A plain Node `http` server run by `overseer run`: the listening socket
// arrives as fd 3 (socket activation), and SIGTERM drains it without
// dropping a request.
'use strict';
const http = require('http');
const net = require('net');

// How long a keep-alive connection may stay idle after SIGTERM before it is
// closed: its client has stopped sending, so no request can be in flight.
const IDLE_GRACE_MS = 2000;

const worker = process.env.OVERSEER_WORKER || '0';
let draining = false;
const connections = new Map(); // socket -> requests in progress on it

const server = http.createServer((req, res) => {
  const socket = req.socket;
  connections.set(socket, (connections.get(socket) || 0) + 1);
  res.on('close', () => {
    if (connections.has(socket)) connections.set(socket, connections.get(socket) - 1);
  });
  // Once draining, every answer closes its connection: the client learns
  // it from the response and opens a new one (to the new worker).
  if (draining) res.setHeader('Connection', 'close');
  if (req.url === '/healthz') {
    // The readiness probe compares this with the new worker's pid.
    res.end(`${process.pid}\n`);
    return;
  }
  res.setHeader('Content-Type', 'text/plain');
  res.end(`worker=${worker} pid=${process.pid}\n`);
});

server.on('connection', (socket) => {
  connections.set(socket, 0);
  socket.on('close', () => {
    connections.delete(socket);
    if (draining && connections.size === 0) process.exit(0);
  });
});

server.listen({ fd: 3 });

process.on('SIGTERM', () => {
  if (draining) return;
  draining = true;
  // Stop accepting. Not `server.close()`: since Node 19 it also destroys
  // idle keep-alive connections at once, racing a client that is sending
  // its next request on one. The master keeps the socket open for the
  // next worker.
  net.Server.prototype.close.call(server);
  if (connections.size === 0) process.exit(0);
  // Connections that are busy close after their response; those still
  // idle after the grace are closed (their clients have stopped sending).
  setTimeout(() => {
    for (const [socket, busy] of connections) if (busy === 0) socket.destroy();
  }, IDLE_GRACE_MS).unref();
});
