/**
 * errors.ts — typed errors with stable codes.
 *
 * Exports: SmtpReplyError (converted to an SMTP reply in exactly one place: the receiver
 * adapter), ConfigError (a config key, its value and what is allowed), TempLookupError
 * (a routing lookup could not be answered: always 4xx / deferral, never a bounce).
 */

/** An SMTP reply to send to the client: `code` 4xx/5xx, `enhanced` like "5.1.1". */
export class SmtpReplyError extends Error {
  readonly code: number;
  readonly enhanced: string;
  constructor(code: number, enhanced: string, message: string) {
    super(message);
    this.name = 'SmtpReplyError';
    this.code = code;
    this.enhanced = enhanced;
  }
  get permanent(): boolean {
    return this.code >= 500;
  }
}

/** A configuration problem: names the key, the value and what is allowed. */
export class ConfigError extends Error {
  readonly key: string;
  constructor(key: string, message: string) {
    super(`${key}: ${message}`);
    this.name = 'ConfigError';
    this.key = key;
  }
}

/** A lookup (table file, directory) failed for a reason that may go away: try later. */
export class TempLookupError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TempLookupError';
  }
}
