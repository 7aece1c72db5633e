/**
 * The smtp-server patches are written for one release: this test fails after an upgrade of
 * smtp-server until the patches have been checked again (and PATCHED_FOR moved), and it checks
 * that each patch is in place and acts only for Tandem's servers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { applySmtpServerPatches, PATCHED_FOR } from './smtp-server-patches.ts';

test('the smtp-server installed is the release the patches were checked for; every patch is in place, once', () => {
  const proto = SMTPConnection.prototype as any;
  const before = { send: proto.send, rcpt: proto.handler_RCPT, init: proto.init };
  const report = applySmtpServerPatches();
  assert.equal(report.versionMatches, true, `smtp-server ${report.version} installed, patches written for ${PATCHED_FOR}: check receiver/smtp-server-patches.ts against the new release, then move PATCHED_FOR`);
  assert.equal(report.greetingDelay, true, 'smtp-server\'s init() no longer matches what greeting-delay.ts reproduces');
  assert.notEqual(proto.send, before.send);
  assert.notEqual(proto.handler_RCPT, before.rcpt);
  assert.notEqual(proto.init, before.init);
  assert.equal(proto.tandemGuardHooks, true);
  const after = { send: proto.send, rcpt: proto.handler_RCPT };
  assert.equal(applySmtpServerPatches(), report, 'a second call changes nothing');
  assert.deepEqual({ send: proto.send, rcpt: proto.handler_RCPT }, after);
});

test('the enhanced-code patch sends "X.Y.Z text" as it is for Tandem\'s servers only', () => {
  applySmtpServerPatches();
  const sent: string[] = [];
  const conn = (tandem: boolean) => Object.assign(Object.create(SMTPConnection.prototype), {
    _server: { options: tandem ? { tandem: true } : {}, logger: { debug() {}, info() {} } },
    _socket: { write: (s: string) => void sent.push(s), readyState: 'open', destroyed: false },
    id: 'x', remoteAddress: '127.0.0.1', _closing: false, _closed: false,
    _transactionCounter: 0, session: {},
  });
  (SMTPConnection.prototype as any).send.call(conn(true), 554, '5.7.1 Relay access denied');
  (SMTPConnection.prototype as any).send.call(conn(false), 554, '5.7.1 Relay access denied');
  assert.match(sent[0] ?? '', /^554 5\.7\.1 Relay access denied/);
  assert.match(sent[1] ?? '', /^554 5\.\d\.\d /, 'another server: smtp-server\'s own enhanced code in front');
});
