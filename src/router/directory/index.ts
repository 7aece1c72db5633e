/**
 * router/directory/index.ts — the public surface of the directory router package.
 *
 * What can go wrong: see each module's header. Config keys: directory.* (read in node/wiring.ts).
 */
export { DirectoryRouter, combineSources } from './directory-router.ts';
export { DirectorySource } from './directory-source.ts';
export type { DirectorySourceOptions } from './directory-source.ts';
export { DirectoryPool, DirectoryUnavailableError, DirectoryMasterUnavailableError, DirectoryWriteError, DirectoryWriteOutcomeUnknownError } from './pool.ts';
export type { DirectoryPoolOptions, DirectoryServerConfig, DirectoryServerStatus, LdapClient } from './pool.ts';
export { LookupCache } from './cache.ts';
export type { LookupCacheOptions, CacheStats, LookupContext } from './cache.ts';
export { DirectoryAdmin, DIR_KINDS } from './directory-admin.ts';
export type { DirKind, DirEntry, ImportCounts } from './directory-admin.ts';
