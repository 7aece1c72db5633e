/**
 * test/harness/witness-main.ts — one node's etcd witness as a process of its own, so a test can
 * kill it the way a machine dies (kill -9 of its process group) and watch its lease expire.
 *
 *   node --import tsx test/harness/witness-main.ts --endpoints URL,URL,URL --node ID
 *        --ttl-ms N [--prefix P] [--acquire SPOOL ...]
 *
 * Starts the witness, takes the takeover lock on each --acquire spool, then prints one JSON line
 * {"msg":"witness ready","lease":"ID","acquired":{"SPOOL":EPOCH}} and runs until killed. Events
 * are printed as JSON lines {"msg":"witness event",...}. Exports nothing (an entry point).
 * What can go wrong: etcd not healthy at start (exits 1 with the witness's state).
 */
import { parseArgs } from 'node:util';
import { EtcdWitness } from '../../src/cluster/index.ts';

const { values } = parseArgs({
  options: {
    endpoints: { type: 'string' },
    node: { type: 'string' },
    'ttl-ms': { type: 'string' },
    prefix: { type: 'string' },
    acquire: { type: 'string', multiple: true, default: [] },
  },
});
const witness = new EtcdWitness({
  endpoints: (values.endpoints ?? '').split(','),
  nodeId: values.node ?? '',
  leaseTtlMs: Number(values['ttl-ms']),
  prefix: values.prefix,
  onEvent: (e) => console.log(JSON.stringify({ msg: 'witness event', ...e })),
});
const state = await witness.start();
const lease = witness.leaseStatus();
if (state.type !== 'ok' || lease.type !== 'held') {
  console.log(JSON.stringify({ msg: 'witness not started', state }));
  process.exit(1);
}
const acquired: Record<string, number> = {};
for (const spool of values.acquire) {
  const r = await witness.acquire(spool);
  if (r.type !== 'acquired') {
    console.log(JSON.stringify({ msg: 'acquire refused', spool, result: r }));
    process.exit(1);
  }
  acquired[spool] = r.epoch;
}
console.log(JSON.stringify({ msg: 'witness ready', lease: lease.id, acquired }));
