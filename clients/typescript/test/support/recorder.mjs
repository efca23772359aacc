// A real local HTTP server that records every request and answers as each test scripts it.
import http from 'node:http';

/** Writes a JSON answer. */
export function reply(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

/** What `runtally serve` answers when it takes everything: 200 {accepted, rejected: []}. */
export function acceptAll(req, res) {
  reply(res, 200, { accepted: Array.isArray(req.body) ? req.body.length : 0, rejected: [] });
}

/**
 * Starts a server on 127.0.0.1 (a free port). `respond(request, res, n)` answers the n-th
 * request (1-based); `request` is {method, url, headers, raw, body, at}. Returns {url, requests,
 * close}.
 */
export async function recordingServer(respond = acceptAll) {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const raw = Buffer.concat(chunks).toString('utf8');
    let body;
    try {
      body = JSON.parse(raw);
    } catch {
      body = undefined;
    }
    const request = { method: req.method, url: req.url, headers: req.headers, raw, body, at: Date.now() };
    requests.push(request);
    await respond(request, res, requests.length);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(resolve);
      }),
  };
}

/** A URL on which nothing listens (a port just freed). */
export async function deadUrl() {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return `http://127.0.0.1:${port}`;
}
