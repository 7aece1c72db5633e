/**
 * router/index.ts — the public surface of the router package.
 *
 * Exports: the Router interface and its types (types.ts), TableRouter (Postfix-style table
 * files), loadTable / TableFormatError (table file reader, for other table users), NetworkList
 * and loadNetworkTable (relay networks), PasswordTable, hashPassword, verifyPassword (SMTP AUTH).
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
