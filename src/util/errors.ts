/**
 * errors.ts — typed errors with stable codes.
 *
 * Every error class Tandem throws extends TandemError and carries a stable string `code`
 * (UPPER_SNAKE, grouped by part: SPOOL_*, DIRECTORY_*, PROXY_*, …), like undici's UND_ERR_*.
 * Callers match errors with `instanceof` or by `code`, never by `name` or message text; the
 * codes, with the exit status and SMTP reply each leads to, are listed in docs/errors.md (keep it
 * in step). Errors from the system keep Node's errno codes (ENOENT, EIO …): test them with
 * isErrno (util/errno.ts).
 *
 * Here: the errors shared by several parts. SmtpReplyError is converted to an SMTP reply in
 * exactly one place (the receiver adapter); ConfigError names a config key, its value and what
 * is allowed; TempLookupError means a routing lookup could not be answered (always 4xx /
 * deferral, never a bounce); NoSuchMessageError is an operator action on a queue id the queue
 * does not hold.
 */

/** The base of Tandem's own errors: `code` is stable, documented, and what callers test. */
export abstract class TandemError extends Error {
  abstract readonly code: string;
}

/** An SMTP reply to send to the client: `replyCode` 4xx/5xx, `enhanced` like "5.1.1". */
export class SmtpReplyError extends TandemError {
  readonly code = 'SMTP_REPLY';
  readonly replyCode: number;
  readonly enhanced: string;
  constructor(replyCode: number, enhanced: string, message: string) {
    super(message);
    this.name = 'SmtpReplyError';
    this.replyCode = replyCode;
    this.enhanced = enhanced;
  }
}

/** A configuration problem: names the key, the value and what is allowed. */
export class ConfigError extends TandemError {
  readonly code = 'CONFIG_INVALID';
  readonly key: string;
  constructor(key: string, message: string) {
    super(`${key}: ${message}`);
    this.name = 'ConfigError';
    this.key = key;
  }
}

/** A lookup (table file, directory) failed for a reason that may go away: try later. */
export class TempLookupError extends TandemError {
  readonly code = 'LOOKUP_TEMPORARY';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TempLookupError';
  }
}

/** An operator action (hold, release, delete, show) on a queue id the queue does not hold. */
export class NoSuchMessageError extends TandemError {
  readonly code = 'QUEUE_NO_SUCH_MESSAGE';
  constructor(readonly queueId: string) {
    super(`no message ${queueId} in the queue`);
    this.name = 'NoSuchMessageError';
  }
}
