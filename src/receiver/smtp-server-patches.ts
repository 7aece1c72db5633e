/**
 * receiver/smtp-server-patches.ts — every change Tandem makes to smtp-server's SMTPConnection,
 * in one place, applied once at start-up (SmtpReceiver's constructor) and checked against the
 * smtp-server version they were written for.
 *
 * The patches (each acts only for servers whose options carry `tandem`; others keep the
 * library's behaviour):
 *   - session guard (session-guard.ts): _onCommand, send, _onClose wrapped for the per-command
 *     and DATA deadlines and the error limits;
 *   - enhanced status codes: smtp-server derives the X.Y.Z code from the reply code alone (a 554
 *     relay refusal would say 5.6.0); a reply text starting with "X.Y.Z " is sent as it is;
 *   - UTF-8 ORCPT: handler_RCPT gets the ORCPT parameter rewritten into its RFC 6533 utf-8 form
 *     first (smtp-server refuses the xtext with UTF-8 octets that Postfix sends);
 *   - greeting delay (greeting-delay.ts): init() with the 100 ms early-talker pause made a setting,
 *     and the maxClients refusal made a bounded wait for a slot (connection-slots.ts); checked on
 *     the method's source text, skipped with a warning when it no longer matches.
 * Guard: the methods patched must exist; a version other than PATCHED_FOR's major.minor is
 * reported (`versionMatches: false`) so that start-up logs it, and the patches' test
 * (smtp-server-patches.test.ts) fails on an upgrade until someone has checked them again.
 */
import { createRequire } from 'node:module';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { normaliseOrcptInCommand } from '../util/dsn-address.ts';
import { installSessionGuardHooks } from './session-guard.ts';
import { installGreetingDelay } from './greeting-delay.ts';

/** The smtp-server release these patches were written and checked for. */
export const PATCHED_FOR = '3.21';

export interface SmtpServerPatchReport {
  /** smtp-server's version as installed. */
  version: string;
  /** Its major.minor is PATCHED_FOR. */
  versionMatches: boolean;
  /** The greeting delay could be installed (smtp.greeting_delay takes effect). */
  greetingDelay: boolean;
}

const METHODS = ['init', 'send', 'handler_RCPT', '_onCommand', '_onClose', 'connectionReady'] as const;
const ENHANCED_PREFIX = /^([245]\.\d{1,3}\.\d{1,3}) /;

let report: SmtpServerPatchReport | undefined;

/** Apply the patches once per process (later calls return the first report). Throws when a method to patch is gone. */
export function applySmtpServerPatches(): SmtpServerPatchReport {
  if (report) return report;
  const version = (createRequire(import.meta.url)('smtp-server/package.json') as { version: string }).version;
  const proto = SMTPConnection.prototype as unknown as Record<string, (...args: any[]) => any>;
  const missing = METHODS.filter((m) => typeof proto[m] !== 'function');
  if (missing.length) throw new Error(`smtp-server ${version}: SMTPConnection has no ${missing.join(', ')} any more; Tandem's patches (receiver/smtp-server-patches.ts, written for ${PATCHED_FOR}) must be redone`);

  installSessionGuardHooks();

  const send = proto.send;
  proto.send = function (this: any, code: number, data: unknown, context?: unknown) {
    if (typeof data === 'string' && ENHANCED_PREFIX.test(data) && this._server?.options?.tandem) return send.call(this, code, data, false);
    return send.call(this, code, data, context);
  };

  const rcpt = proto.handler_RCPT;
  proto.handler_RCPT = function (this: any, command: Buffer, callback: () => void) {
    return rcpt.call(this, this._server?.options?.tandem ? normaliseOrcptInCommand(command) : command, callback);
  };

  report = { version, versionMatches: version.split('.').slice(0, 2).join('.') === PATCHED_FOR, greetingDelay: installGreetingDelay() };
  return report;
}
