/**
 * receiver/greeting-delay.ts — the pause before the 220 greeting, made a setting.
 *
 * smtp-server (3.x) holds every new connection for a fixed 100 ms before its greeting, to catch
 * "early talkers" (a client that sends before the banner gets `421 You talk too soon`). It has no
 * option for it, and a client that opens one connection per message is capped by it near 10
 * messages per second per session. This replaces SMTPConnection.init with the same code and the
 * delay read from the server's options (`tandemGreetingDelay`, ms; 0 = greet at once), so the
 * pause is a policy (smtp.greeting_delay, as Postfix postscreen's greet wait) rather than a
 * fixed cost on every connection. The talk-too-soon check itself stays smtp-server's: any input
 * before the greeting is refused as before.
 *
 * The same init() takes the slot check too: with a ConnectionSlots in the server's options
 * (`tandemConnectionSlots`, connection-slots.ts), a connection beyond maxClients waits for a free
 * slot instead of getting smtp-server's immediate 421, and frees its slot when its socket closes.
 *
 * Guarded: the replacement is installed only when the library's init() is still the code it
 * reproduces (checked on its source text); otherwise smtp-server keeps its own 100 ms pause and
 * `installGreetingDelay` returns false, so the caller can log that the setting has no effect.
 * Servers created without the option (not Tandem's) keep the library's behaviour.
 */
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import type { ConnectionSlots } from './connection-slots.ts';

/** The smtp-server option (in ms) read by the replacement init(). */
export const GREETING_DELAY_OPTION = 'tandemGreetingDelay';
/** The smtp-server option holding the listener's ConnectionSlots, read by the replacement init(). */
export const CONNECTION_SLOTS_OPTION = 'tandemConnectionSlots';

/** The parts of smtp-server's init() the replacement reproduces; all must be in its source. */
const EXPECTED = ['this._setListeners(', 'this._server.options.maxClients', 'Too many connected clients', 'setTimeout(() => this.connectionReady(), 100)'];

let installed: boolean | undefined;

export function installGreetingDelay(): boolean {
  if (installed !== undefined) return installed;
  const proto = SMTPConnection.prototype as any;
  const original = proto.init as (this: any) => void;
  const source = String(original);
  installed = EXPECTED.every((s) => source.includes(s));
  if (!installed) return false;
  proto.init = function init(this: any): void {
    const delay = this._server.options[GREETING_DELAY_OPTION];
    if (typeof delay !== 'number') return original.call(this);
    const slots = this._server.options[CONNECTION_SLOTS_OPTION] as ConnectionSlots | undefined;
    this._setListeners(() => {
      const tooMany = (): void => this.send(421, this.name + ' Too many connected clients, try again in a moment', false);
      const greet = (): void => {
        if (this._closing || this._closed) return;
        if (delay <= 0) return this.connectionReady();
        setTimeout(() => this.connectionReady(), delay).unref();
      };
      if (slots) {
        if (this._socket.destroyed) return;
        // the slot is free again at close() (QUIT, 421, shutdown), as smtp-server stops counting
        // a connection against maxClients there, or when the socket closes, whichever is first
        const done = slots.request(greet, tooMany);
        this._socket.once('close', done);
        const close = this.close;
        this.close = function (this: unknown, ...args: unknown[]) {
          done();
          return close.apply(this, args);
        };
        return;
      }
      if (this._server.options.maxClients && this._server.connections.size > this._server.options.maxClients) return tooMany();
      greet();
    });
  };
  return true;
}
