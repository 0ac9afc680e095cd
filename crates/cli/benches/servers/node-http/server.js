// Baseline: a Node `http` server on fd 3 that stops with `server.close()`
// on SIGTERM, as most Node services do.
'use strict';
const http = require('http');

const worker = process.env.OVERSEER_WORKER || '0';
const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.end(`${process.pid}\n`);
    return;
  }
  res.setHeader('Content-Type', 'text/plain');
  res.end(`worker=${worker} pid=${process.pid}\n`);
});
server.listen({ fd: 3 });
process.on('SIGTERM', () => server.close(() => process.exit(0)));
