/**
 * util/pid.ts — whether a process exists on this host (signal 0 checks without sending anything).
 */
import { isErrno } from './errno.ts';

/** True unless the pid certainly does not exist on this host (EPERM means it exists). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return !isErrno(err, 'ESRCH');
  }
}
