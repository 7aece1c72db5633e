/**
 * test/harness/wait.ts — wait for a condition that no event announces (a file appearing, a
 * count reaching a number), polling briefly, with a bound; and one look at whether a mail server
 * greets yet (greets), for harnesses waiting on a server they started.
 */
import { connect } from "node:net";

/** Poll until fn() is truthy and return its value; fails with `what` after timeoutMs. */
export async function eventually<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000, intervalMs = 25): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** One look: does an SMTP/LMTP server on host:port answer a connection with a 220 greeting within 2 s? (It is then sent QUIT.) */
export function greets(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const sock = connect(port, host);
    sock.setTimeout(2000, () => sock.destroy());
    sock.once("data", (d) => {
      resolve(d.toString().startsWith("220"));
      sock.end("QUIT\r\n");
    });
    sock.once("error", () => resolve(false));
    sock.once("close", () => resolve(false));
  });
}
