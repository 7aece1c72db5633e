/**
 * router/passwords.test.ts — tests of scrypt hashing and the SMTP AUTH password table.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { hashPassword, verifyPassword, PasswordTable } from './passwords.ts';

test('hashPassword format and verifyPassword', async () => {
  const stored = await hashPassword('correct horse');
  const m = /^scrypt\$16384\$8\$1\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(stored);
  assert.ok(m, stored);
  assert.equal(Buffer.from(m[1], 'base64').length, 16);
  assert.equal(Buffer.from(m[2], 'base64').length, 32);
  assert.notEqual(await hashPassword('correct horse'), stored, 'salt is random');
  assert.equal(await verifyPassword('correct horse', stored), true);
  assert.equal(await verifyPassword('correct horsf', stored), false);
  assert.equal(await verifyPassword('', stored), false);
  await assert.rejects(verifyPassword('x', '$6$salt$hash'), /unsupported password hash format/);
});

test('PasswordTable: right password, wrong password, unknown user, case of user names', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tandem-pw-'));
  try {
    const file = path.join(dir, 'passwords');
    await writeFile(file, `# SMTP AUTH users\nalice@example.com ${await hashPassword('s3cret')}\nbob: ${await hashPassword('hunter2')}\n`);
    const table = await PasswordTable.load(file);
    assert.equal(table.size, 2);
    assert.equal(await table.verify('alice@example.com', 's3cret'), true);
    assert.equal(await table.verify('Alice@Example.com', 's3cret'), true);
    assert.equal(await table.verify('alice@example.com', 'S3cret'), false);
    assert.equal(await table.verify('bob', 'hunter2'), true);
    assert.equal(await table.verify('mallory', 's3cret'), false);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('unsupported or unsafe hashes are rejected at load with file:line, without echoing the hash', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tandem-pw-'));
  try {
    const file = path.join(dir, 'passwords');
    const good = await hashPassword('x');
    const cases: [string, RegExp][] = [
      ['$6$rounds=5000$abc$def', /passwords:2: user "bob": unsupported password hash format/],
      ['{SSHA}abcdef', /passwords:2: user "bob": unsupported/],
      ['scrypt$1000$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=', /N must be a power of two/],
      ['scrypt$16384$64$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=', /r must be from 1 to 32/],
      ['scrypt$16384$8$1$AA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=', /salt must be at least 8 bytes/],
      ['scrypt$16384$8$1$AAAA!AAA$AAAA', /must be base64/],
    ];
    for (const [hash, pattern] of cases) {
      await writeFile(file, `alice ${good}\nbob ${hash}\n`);
      await assert.rejects(PasswordTable.load(file), (err: Error) => {
        assert.match(err.message, pattern);
        assert.ok(!err.message.includes(hash), 'the stored hash is not printed');
        return true;
      });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
