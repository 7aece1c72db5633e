/*
 * bare-smtp-server.ts - smtp-server with nothing behind it: no policy, no spool, no delivery.
 * The floor of the library Tandem receives with, for bench/steps.ts (`--bare`): every command
 * answered by smtp-server's own handlers, the message read and thrown away, 250 at once.
 * The greeting comes at once (Tandem's greeting-delay replacement, set to 0), as Tandem's does.
 *
 *   node --import tsx bench/bare-smtp-server.ts     prints {"event":"ready","port":N}
 */
import { SMTPServer } from "smtp-server";
import { GREETING_DELAY_OPTION, installGreetingDelay } from "../src/receiver/greeting-delay.ts";

if (!installGreetingDelay()) throw new Error("smtp-server's init() changed: the greeting would wait 100 ms");
const server = new SMTPServer({
  disableReverseLookup: true,
  authOptional: true,
  hideSTARTTLS: true,
  logger: false,
  [GREETING_DELAY_OPTION]: 0,
  onData(stream, _session, cb) {
    stream.on("data", () => undefined);
    stream.on("end", () => cb(null));
  },
} as ConstructorParameters<typeof SMTPServer>[0]);
server.listen(0, "127.0.0.1", () => {
  const addr = server.server.address();
  console.log(JSON.stringify({ event: "ready", port: typeof addr === "object" && addr ? addr.port : 0 }));
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
