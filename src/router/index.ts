/**
 * router/index.ts — the public surface of the router package.
 *
 * What can go wrong: see each module's header. Config keys: none here.
 */
export { routeKey } from './types.ts';
export type { Route, RecipientResolution, Router } from './types.ts';
export { TableRouter } from './tables/table-router.ts';
export type { TableRouterOptions } from './tables/table-router.ts';
export { loadTable, TableFormatError } from './tables/table-file.ts';
export type { TableLoadOptions } from './tables/table-file.ts';
export { NetworkList, loadNetworkTable } from './networks.ts';
export { PasswordTable, hashPassword, verifyPassword } from './passwords.ts';
