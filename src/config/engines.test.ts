/**
 * Every package in package-lock.json runs on Node 20 (the documented runtime): `npm ci` must
 * not warn that a dependency needs a newer Node (as cookie 2.x did, through fastify's
 * light-my-request; package.json pins light-my-request 6.6.0 with cookie 1.x for that).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

/** Does a range of the forms found in lock files (">=X", "^X || >=Y", ">= 10.x") admit major 20? */
function admits20(range: string): boolean {
  return range.split('||').some((alt) => {
    const parts = alt.trim().split(/\s+(?=[<>^~=])/);
    return parts.every((p) => {
      const m = /^(>=|>|<=|<|\^|~|=)?\s*v?(\d+)(?:\.(\d+|x))?/.exec(p.trim());
      if (!m) return true;
      const major = Number(m[2]);
      switch (m[1]) {
        case '>=': return 20 >= major;
        case '>': return 20 > major || (20 === major);
        case '<': return 20 < major;
        case '<=': return 20 <= major;
        case '^': case '~': case '=': case undefined: return major === 20;
        default: return true;
      }
    });
  });
}

test('no package in the lock file requires a Node newer than 20', () => {
  const lock = JSON.parse(readFileSync(new URL('../../package-lock.json', import.meta.url), 'utf8')) as { packages: Record<string, { engines?: { node?: string } }> };
  const tooNew = Object.entries(lock.packages).filter(([, p]) => typeof p.engines?.node === 'string' && !admits20(p.engines.node)).map(([name, p]) => `${name} (${p.engines!.node})`);
  assert.deepEqual(tooNew, []);
  assert.equal(admits20('>=22'), false, 'the check itself sees a Node 22 requirement');
});
