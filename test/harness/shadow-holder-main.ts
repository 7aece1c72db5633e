/**
 * test/harness/shadow-holder-main.ts — a shadow holder in its own process, for tests that kill
 * and restart it. Argument: one JSON object {root, port, origins, ca, cert, key} (PEM text).
 * Prints {"event":"holder-ready","port":N} when listening; runs until killed.
 */
import { ShadowHolder, ShadowStore } from '../../src/cluster/index.ts';

const args = JSON.parse(process.argv[2] ?? '{}') as { root: string; port: number; origins: string[]; ca: string; cert: string; key: string };
const store = await ShadowStore.open(args.root);
const holder = await ShadowHolder.start({ store, origins: args.origins, port: args.port, tls: { ca: args.ca, cert: args.cert, key: args.key } });
process.stdout.write(`${JSON.stringify({ event: 'holder-ready', port: holder.port })}\n`);
process.on('SIGTERM', () => void holder.close().then(() => process.exit(0)));
