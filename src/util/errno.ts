/**
 * util/errno.ts — is this error a given errno code (ENOENT, EEXIST, ...)?
 */
export function isErrno(err: unknown, code: string): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === code;
}
