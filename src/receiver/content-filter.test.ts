/**
 * content-filter.test.ts — the Rspamd client against a stub HTTP server speaking /checkv2:
 * what is sent (envelope headers, message), each action's outcome, and fail-open/fail-closed
 * on an error and on a timeout. The real Rspamd is in test/rspamd.test.ts.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { RspamdFilter } from './content-filter.ts';
import { SmtpReplyError } from '../util/errors.ts';

let answer: (body: string, headers: http.IncomingHttpHeaders, res: http.ServerResponse) => void = () => undefined;
const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => (body += d));
  req.on('end', () => answer(body, req.headers, res));
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
after(() => { server.closeAllConnections(); server.close(); });
const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const json = (o: object) => (_b: string, _h: http.IncomingHttpHeaders, res: http.ServerResponse) => { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify(o)); };
const ctx = { ip: '192.0.2.1', helo: 'client.test', sender: 'a@client.test', recipients: ['b@x.test', 'c@x.test'], queueId: 'Q1' };
const msg = Buffer.from('Subject: hi\r\n\r\nbody\r\n');
const code = (p: Promise<unknown>) => p.then(() => 0, (e) => (e instanceof SmtpReplyError ? `${e.replyCode} ${e.enhanced}` : String(e)));

test('the message and envelope go to /checkv2; "no action" is accepted with the score on top', async () => {
  let seen: { body: string; headers: http.IncomingHttpHeaders } | undefined;
  answer = (body, headers, res) => { seen = { body, headers }; json({ action: 'no action', score: 1.5, required_score: 15 })(body, headers, res); };
  const v = await new RspamdFilter({ url, timeoutMs: 2000, failOpen: false, onSpam: 'header' }).scan(msg, ctx);
  assert.equal(seen!.body, msg.toString());
  assert.equal(seen!.headers.ip, '192.0.2.1');
  assert.equal(seen!.headers.from, 'a@client.test');
  assert.equal(seen!.headers.rcpt, 'b@x.test, c@x.test');
  assert.equal(v.headers, 'X-Spam-Action: no action\r\nX-Spam-Score: 1.50 / 15.00\r\n');
  assert.equal(v.hold, false);
});

test('reject → 550 5.7.1; soft reject and greylist → 451 4.7.1; add header → X-Spam: Yes, or hold', async () => {
  const f = new RspamdFilter({ url, timeoutMs: 2000, failOpen: true, onSpam: 'header' });
  answer = json({ action: 'reject', score: 20, required_score: 15 });
  assert.equal(await code(f.scan(msg, ctx)), '550 5.7.1');
  answer = json({ action: 'soft reject', score: 0, required_score: 15 });
  assert.equal(await code(f.scan(msg, ctx)), '451 4.7.1');
  answer = json({ action: 'greylist', score: 4, required_score: 15 });
  assert.equal(await code(f.scan(msg, ctx)), '451 4.7.1');
  answer = json({ action: 'add header', score: 7, required_score: 15 });
  assert.match((await f.scan(msg, ctx)).headers, /^X-Spam: Yes\r$/m);
  const held = await new RspamdFilter({ url, timeoutMs: 2000, failOpen: true, onSpam: 'hold' }).scan(msg, ctx);
  assert.equal(held.hold, true);
});

test('Rspamd failing or silent: fail-open accepts unscanned (reported), fail-closed answers 451 4.7.1', async () => {
  const failures: string[] = [];
  answer = (_b, _h, res) => { res.statusCode = 500; res.end('oops'); };
  const open = await new RspamdFilter({ url, timeoutMs: 2000, failOpen: true, onSpam: 'header', onFailure: (w) => failures.push(w) }).scan(msg, ctx);
  assert.equal(open.headers, '');
  assert.match(failures[0], /HTTP 500/);
  answer = () => undefined; // never answers
  const t0 = Date.now();
  assert.equal(await code(new RspamdFilter({ url, timeoutMs: 300, failOpen: false, onSpam: 'header', onFailure: (w) => failures.push(w) }).scan(msg, ctx)), '451 4.7.1');
  assert.ok(Date.now() - t0 < 2000);
  assert.match(failures[1], /no answer within 300 ms/);
  const down = new RspamdFilter({ url: 'http://127.0.0.1:1', timeoutMs: 1000, failOpen: false, onSpam: 'header' });
  assert.equal(await code(down.scan(msg, ctx)), '451 4.7.1');
});
