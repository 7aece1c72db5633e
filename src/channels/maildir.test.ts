/**
 * maildir.test.ts — MaildirChannel: the file lands in new/ with Return-Path and Delivered-To,
 * one copy per recipient, file system failures defer, a Delivered-To loop fails.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { MaildirChannel, maildirFileName } from './maildir.ts';
import { makeJob } from '../../test/harness/channel-servers.ts';
import { bufferSource, type MessageSource } from '../message/source.ts';
import { Readable } from 'node:stream';

async function withTempDir(body: (dir: string) => Promise<void>) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tandem-maildir-'));
  try {
    await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('delivers into new/ with Return-Path and Delivered-To, creating tmp/new/cur mode 0700', async () => {
  await withTempDir(async (dir) => {
    const box = path.join(dir, 'user', 'Maildir');
    const channel = new MaildirChannel({ hostname: 'node1.example' });
    const [r] = await channel.deliver(makeJob({ type: 'maildir', path: box }, ['user@example.com']));
    assert.equal(r.outcome, 'delivered', r.reply);
    assert.equal(r.via, `maildir:${box}`);
    for (const sub of ['tmp', 'new', 'cur']) assert.equal((await stat(path.join(box, sub))).mode & 0o777, 0o700);
    const files = await readdir(path.join(box, 'new'));
    assert.equal(files.length, 1);
    assert.match(files[0], /^\d+\.M\d+P\d+Q\d+\.node1\.example$/);
    assert.match(r.reply, new RegExp(`^2\\.0\\.0 .*new/${files[0].replace(/\./g, '\\.')}$`));
    assert.deepEqual(await readdir(path.join(box, 'tmp')), []);
    const content = await readFile(path.join(box, 'new', files[0]), 'utf8');
    assert.ok(content.startsWith('Return-Path: <sender@example.org>\nDelivered-To: user@example.com\nFrom: sender@example.org\n'), content);
    assert.ok(!content.includes('\r'), 'LF line endings');
    assert.equal((await stat(path.join(box, 'new', files[0]))).mode & 0o777, 0o600);
  });
});

test('one copy per recipient, each with its own Delivered-To', async () => {
  await withTempDir(async (dir) => {
    const results = await new MaildirChannel().deliver(makeJob({ type: 'maildir', path: dir }, ['a@example.com', 'b@example.com']));
    assert.deepEqual(results.map((r) => r.outcome), ['delivered', 'delivered']);
    const files = await readdir(path.join(dir, 'new'));
    assert.equal(files.length, 2);
    const headers = await Promise.all(files.map(async (f) => /Delivered-To: (.*)\n/.exec(await readFile(path.join(dir, 'new', f), 'utf8'))?.[1]));
    assert.deepEqual(headers.sort(), ['a@example.com', 'b@example.com']);
  });
});

test('a path under a regular file defers with the reason (never bounces)', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, 'not-a-dir');
    await writeFile(file, 'x');
    const results = await new MaildirChannel().deliver(makeJob({ type: 'maildir', path: path.join(file, 'Maildir') }, ['a@example.com', 'b@example.com']));
    assert.deepEqual(results.map((r) => r.outcome), ['deferred', 'deferred']);
    assert.match(results[0].reply, /^4\.3\.5 .*not a directory/);
  });
});

test('a message already delivered to the address is a loop: failed 5.4.6', async () => {
  await withTempDir(async (dir) => {
    const job = makeJob({ type: 'maildir', path: dir }, ['user@example.com', 'other@example.com'], {
      message: bufferSource(Buffer.from('Delivered-To: USER@example.com\r\nSubject: loop\r\n\r\nbody\r\n')),
    });
    const results = await new MaildirChannel().deliver(job);
    assert.equal(results[0].outcome, 'failed');
    assert.match(results[0].reply, /^5\.4\.6 /);
    assert.equal(results[1].outcome, 'delivered');
  });
});

test('file names are unique and escape / and :', () => {
  const a = maildirFileName('host/x:y');
  const b = maildirFileName('host/x:y');
  assert.notEqual(a, b);
  assert.ok(a.endsWith('.host\\057x\\072y'));
});

const asRoot = process.getuid?.() === 0;

test('local.maildir_owners: folders created and files get the owner, group and mode, whatever the umask', { skip: !asRoot && 'chown needs root' }, async () => {
  const { ownerLookup } = await import('./maildir-owner.ts');
  await withTempDir(async (dir) => {
    const owners = ownerLookup({ '*': { mode: '0600' }, 'example.com': { owner: 'nobody', group: 'nogroup', mode: '0660' }, 'root@example.com': { owner: 0 } });
    const box = path.join(dir, 'example.com', 'user');
    const channel = new MaildirChannel({ owners });
    const saved = process.umask(0o077);
    let r;
    try {
      [r] = await channel.deliver(makeJob({ type: 'maildir', path: box }, ['user@example.com']));
    } finally {
      process.umask(saved);
    }
    assert.equal(r.outcome, 'delivered', r.reply);
    for (const d of [path.join(dir, 'example.com'), box, ...['tmp', 'new', 'cur'].map((s) => path.join(box, s))]) {
      const st = await stat(d);
      assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [65534, 65534, 0o770], d);
    }
    const [file] = await readdir(path.join(box, 'new'));
    const st = await stat(path.join(box, 'new', file));
    assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [65534, 65534, 0o660]);
    assert.deepEqual(owners('ROOT@example.com'), { uid: 0 }, 'an address key wins over its domain, as a whole');
    assert.deepEqual(owners('x@other.test'), { mode: 0o600 });
  });
});

test('a directory mailbox owner (uidNumber/gidNumber on the route) is applied, and wins over the config', { skip: !asRoot && 'chown needs root' }, async () => {
  const { ownerLookup } = await import('./maildir-owner.ts');
  await withTempDir(async (dir) => {
    const channel = new MaildirChannel({ owners: ownerLookup({ '*': { owner: 0, group: 0, mode: '0640' } }) });
    const [r] = await channel.deliver(makeJob({ type: 'maildir', path: dir + '/box', owner: { uid: 4242, gid: 4343 } }, ['u@example.com']));
    assert.equal(r.outcome, 'delivered', r.reply);
    const [file] = await readdir(path.join(dir, 'box', 'new'));
    const st = await stat(path.join(dir, 'box', 'new', file));
    assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [4242, 4343, 0o640]);
  });
});

test('an unknown user name in local.maildir_owners is an error at start-up', async () => {
  const { ownerLookup } = await import('./maildir-owner.ts');
  assert.throws(() => ownerLookup({ 'example.com': { owner: 'no-such-user-tandem' } }), /local\.maildir_owners\."example\.com"\.owner: no user named "no-such-user-tandem"/);
});

test('a large message is streamed into the Maildir with LF line ends, also where a CRLF falls between two chunks', async () => {
  await withTempDir(async (dir) => {
    const box = path.join(dir, 'Maildir');
    const text = `Subject: big\r\n\r\n${'line\r\n'.repeat(1000)}`;
    const cut = text.indexOf('\r\n', 100) + 1; // a chunk ends with CR, the next starts with LF
    const chunks = [Buffer.from(text.slice(0, cut)), Buffer.from(text.slice(cut, 3000)), Buffer.from(text.slice(3000))];
    const message: MessageSource = { size: text.length, head: Buffer.from('Subject: big\r\n\r\n'), stream: () => Readable.from(chunks) };
    const [r] = await new MaildirChannel({ hostname: 'h' }).deliver({ ...makeJob({ type: 'maildir', path: box }, ['u@example.com']), message });
    assert.equal(r.outcome, 'delivered', r.reply);
    const [file] = await readdir(path.join(box, 'new'));
    assert.equal(await readFile(path.join(box, 'new', file), 'utf8'), `Return-Path: <sender@example.org>\nDelivered-To: u@example.com\n${text.replace(/\r\n/g, '\n')}`);
  });
});
