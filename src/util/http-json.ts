/**
 * util/http-json.ts — one JSON request to another node's admin API (http or https), for the
 * cluster-wide tracking search and the console's cluster view.
 *
 * node:http(s) rather than fetch, so that an https peer can be checked against our own CA
 * file (admin.tls.ca) without a global agent. Never throws: an unreachable peer, a timeout or
 * an answer that is not JSON is {ok: false, error}. `body` is sent as JSON.
 */
import http from 'node:http';
import https from 'node:https';

export type HttpJsonReply = { ok: true; status: number; body: any } | { ok: false; error: string };

export function httpJson(url: string, opts: { method?: string; token?: string; ca?: Buffer | string; timeoutMs?: number; body?: unknown } = {}): Promise<HttpJsonReply> {
  return new Promise((resolve) => {
    let u: URL;
    try { u = new URL(url); } catch { return resolve({ ok: false, error: `bad URL ${url}` }); }
    const lib = u.protocol === 'https:' ? https : http;
    const req = lib.request(u, {
      method: opts.method ?? 'GET',
      headers: { accept: 'application/json', ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}), ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}) },
      timeout: opts.timeoutMs ?? 3000,
      ...(opts.ca && u.protocol === 'https:' ? { ca: opts.ca } : {}),
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve({ ok: true, status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
        } catch {
          resolve({ ok: false, error: `HTTP ${res.statusCode}: not JSON` });
        }
      });
      res.on('error', (err) => resolve({ ok: false, error: err.message }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${opts.timeoutMs ?? 3000} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, error: err.code ?? err.message }));
    req.end(opts.body !== undefined ? JSON.stringify(opts.body) : undefined);
  });
}
