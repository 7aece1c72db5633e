/**
 * errors.test.ts — every error class Tandem raises carries a stable code, and docs/errors.md
 * lists it (the table operators and scripts go by).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ConfigError, NoSuchMessageError, SmtpReplyError, TandemError, TempLookupError } from './errors.ts';
import { CorruptQueueFileError, SpoolLockedError } from '../spool/index.ts';
import { TableFormatError } from '../router/index.ts';
import {
  DirectoryMasterUnavailableError, DirectoryUnavailableError, DirectoryWriteError, DirectoryWriteOutcomeUnknownError,
} from '../router/directory/pool.ts';
import { ProxyHeaderError } from '../receiver/index.ts';

const docs = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');

const samples: TandemError[] = [
  new SmtpReplyError(550, '5.1.1', 'User unknown'),
  new ConfigError('smtp.listen', 'not a host:port'),
  new TempLookupError('directory unreachable'),
  new NoSuchMessageError('X.Y.a'),
  new CorruptQueueFileError('X.Y.a', '/spool/a/active/X.Y.a', 'bad crc'),
  new SpoolLockedError('/spool/a/lock', { pid: 1, hostname: 'h', startedAt: 0 }),
  new TableFormatError('aliases', 3, 'no value'),
  new DirectoryUnavailableError('no server answered'),
  new DirectoryMasterUnavailableError('ldap://a down'),
  new DirectoryWriteError('already exists'),
  new DirectoryWriteOutcomeUnknownError('ldap://a'),
  new ProxyHeaderError('PROXY_SIGNATURE', 'no PROXY header'),
];

test('every error class carries a stable code, listed in docs/errors.md', () => {
  for (const err of samples) {
    assert.ok(err instanceof TandemError && err instanceof Error, err.name);
    assert.match(err.code, /^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$/, `${err.name}: code ${err.code}`);
    assert.ok(docs.includes(`\`${err.code}\``), `${err.name}: code ${err.code} is not in docs/errors.md`);
    assert.ok(docs.includes(`\`${err.name}\``), `${err.name} is not in docs/errors.md`);
  }
});

test('an SMTP reply error keeps its reply code apart from its error code', () => {
  const err = new SmtpReplyError(552, '5.3.4', 'too big');
  assert.equal(err.code, 'SMTP_REPLY');
  assert.equal(err.replyCode, 552);
  assert.equal(err.enhanced, '5.3.4');
});
