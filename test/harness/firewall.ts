/**
 * test/harness/firewall.ts — cut traffic between the nodes of a test cluster with iptables on
 * loopback (INPUT rules, each tagged with this test process's pid so that it can be found and
 * removed, and removed even when the test fails).
 *
 * Exports:
 *   FIREWALL_MISSING  false, or why iptables cannot be used here (not root, not installed) — a
 *                     reason for `skip`
 *   cutPorts(ports)   DROP incoming packets to these loopback ports; returns heal(), which
 *                     removes exactly those rules (call it in finally; a second call does nothing)
 * What can go wrong: iptables refusing a rule (the error carries its stderr).
 */
import { execFileSync } from 'node:child_process';

function iptables(...args: string[]): void {
  execFileSync('iptables', ['-w', ...args], { stdio: 'pipe' });
}

export const FIREWALL_MISSING: string | false = (() => {
  try {
    iptables('-L', 'INPUT', '-n');
    return false;
  } catch {
    return 'needs root and iptables (installed by .ci/run)';
  }
})();

/** DROP what arrives on 127.0.0.1 at these ports ("udp"/"tcp"); heal() takes the rules out again. */
export function cutPorts(ports: ReadonlyArray<{ proto: 'udp' | 'tcp'; port: number }>): () => void {
  const rules: string[][] = [];
  const heal = () => {
    for (const rule of rules.splice(0)) {
      try {
        iptables('-D', ...rule);
      } catch {
        // already gone
      }
    }
  };
  try {
    for (const { proto, port } of ports) {
      const rule = ['INPUT', '-p', proto, '-d', '127.0.0.1', '--dport', String(port), '-j', 'DROP', '-m', 'comment', '--comment', `tandem-test-${process.pid}`];
      iptables('-I', ...rule);
      rules.push(rule);
    }
  } catch (err) {
    heal();
    throw err;
  }
  return heal;
}
