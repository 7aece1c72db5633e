/**
 * Unit tests of console logins (ConsoleAuth with the real scrypt check): guesses sent in
 * parallel are throttled too, a right password after mistakes still logs in, and a blocked
 * attempt is refused before its password is checked.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configSchema } from '../config/schema.ts';
import { ConsoleAuth } from './auth.ts';
import { hashPassword } from '../router/passwords.ts';

const adminConfig = async (login: Record<string, unknown>) => configSchema.parse({
  admin: { token: 'the-admin-token-0123456789', console: { users: [{ name: 'alice', password: await hashPassword('alice-secret'), role: 'operator' }], login } },
}).admin;

test('parallel guesses: only the free failures (and the one that starts the delay) get their password checked', async () => {
  const auth = new ConsoleAuth(await adminConfig({ free_failures: 3, delay: '10s', lockout_after: 10, lockout: '15m' }));
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => auth.login('alice', `guess-${i}`, '192.0.2.1')));
  assert.equal(results.filter((r) => !r.ok && r.checked).length, 4, 'three free, the fourth starts the delay');
  assert.equal(results.filter((r) => !r.ok && !r.checked).length, 16, 'the rest refused unchecked');
  const right = await auth.login('alice', 'alice-secret', '192.0.2.1');
  assert.ok(!right.ok && !right.checked && right.blocked?.retryAfterMs, 'blocked: even the right password is not checked');
});

test('a right password after mistakes logs in, and forgets them', async () => {
  const auth = new ConsoleAuth(await adminConfig({ free_failures: 2, delay: '10s' }));
  assert.equal((await auth.login('alice', 'typo', '192.0.2.1')).ok, false);
  const r = await auth.login('alice', 'alice-secret', '192.0.2.1');
  assert.ok(r.ok && r.session.role === 'operator');
  for (let i = 0; i < 2; i++) assert.deepEqual(await auth.login('alice', 'typo', '192.0.2.1'), { ok: false, checked: true }, 'free failures again');
  const token = await auth.login('', 'the-admin-token-0123456789', '192.0.2.9');
  assert.ok(token.ok && token.session.user === 'admin', 'the admin token logs in as admin');
});
