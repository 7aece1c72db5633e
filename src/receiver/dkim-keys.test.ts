/**
 * Unit tests of receiver/dkim-keys.ts: which keys are usable for DKIM, dkim.keys before the
 * directory, and a directory entry's key read once per cached entry (a failure is not kept).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkSigningKey, DkimKeys } from './dkim-keys.ts';
import { TempLookupError } from '../util/errors.ts';
import type { DirectoryDkimEntry } from '../router/directory/directory-source.ts';

const pem = (k: { privateKey: { export(o: object): string | Buffer } }) => String(k.privateKey.export({ type: 'pkcs8', format: 'pem' }));

test('RSA of 1024 bits or more and Ed25519 are accepted; a short RSA key, an EC key and garbage are refused, naming the place', () => {
  checkSigningKey(pem(generateKeyPairSync('rsa', { modulusLength: 1024 })), 'k');
  checkSigningKey(pem(generateKeyPairSync('ed25519')), 'k');
  assert.throws(() => checkSigningKey(pem(generateKeyPairSync('rsa', { modulusLength: 512 })), '/etc/k.pem'), /^Error: \/etc\/k\.pem: an RSA key of 512 bits; DKIM needs at least 1024/);
  assert.throws(() => checkSigningKey(pem(generateKeyPairSync('ec', { namedCurve: 'P-256' })), 'k'), /k: a ec key; DKIM signs with RSA or Ed25519/);
  assert.throws(() => checkSigningKey('hello', 'entry x'), /entry x: not a PEM private key/);
});

test('dkim.keys first, then the directory; an unreadable key file of dkim.keys stops the start naming it', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-dkim-keys-'));
  try {
    const file = path.join(dir, 'a.pem');
    writeFileSync(file, pem(generateKeyPairSync('ed25519')));
    const asked: string[] = [];
    const dirKey = pem(generateKeyPairSync('ed25519'));
    const keys = new DkimKeys([{ domain: 'A.test', selector: 'fromfile', key_file: file }], async (d) => {
      asked.push(d);
      return d === 'b.test' || d === 'a.test' ? { dn: `associatedDomain=${d}`, selector: 'fromdir', privateKey: dirKey } : undefined;
    });
    assert.equal((await keys.keyFor('a.test'))?.selector, 'fromfile');
    assert.equal((await keys.keyFor('B.test'))?.selector, 'fromdir');
    assert.equal(await keys.keyFor('c.test'), undefined);
    assert.deepEqual(asked, ['b.test', 'c.test'], 'the directory is not asked for a domain of dkim.keys');
    assert.throws(() => new DkimKeys([{ domain: 'x.test', selector: 's', key_file: path.join(dir, 'nope.pem') }]), /dkim\.keys: the key of x\.test \(.*nope\.pem\): cannot read it/);
    assert.equal(new DkimKeys([]).any, false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a directory entry naming a missing key file is a TempLookupError naming entry and file, tried again with the next message', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-dkim-keys-'));
  try {
    const file = path.join(dir, 'later.pem');
    const entry: DirectoryDkimEntry = { dn: 'associatedDomain=l.test,ou=domains', selector: 's', keyFile: file };
    const keys = new DkimKeys([], async () => entry);
    await assert.rejects(keys.keyFor('l.test'), (err: Error) => err instanceof TempLookupError && err.message.includes('associatedDomain=l.test') && err.message.includes(file));
    writeFileSync(file, pem(generateKeyPairSync('ed25519')));
    assert.equal((await keys.keyFor('l.test'))?.selector, 's', 'the file put right is used without waiting for the cache');
    const bad = new DkimKeys([], async () => new TempLookupError('directory entry e: bad'));
    await assert.rejects(bad.keyFor('x.test'), /directory entry e: bad/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
