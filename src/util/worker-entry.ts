/**
 * util/worker-entry.ts — how to start one of Tandem's worker threads from compiled or source code.
 *
 * workerEntry(moduleUrl, name) gives the Worker arguments for the module `name` beside
 * `moduleUrl` (the caller's import.meta.url): the compiled `name.js` when the caller runs from
 * dist/, or, when it runs from source through tsx (the tests), an eval'd entry that registers
 * tsx in the thread first (a worker does not inherit the main thread's `--import tsx`) and then
 * imports `name.ts`.
 */
export function workerEntry(moduleUrl: string, name: string): [string | URL, { eval?: boolean }] {
  if (!moduleUrl.endsWith('.ts')) return [new URL(`./${name}.js`, moduleUrl), {}];
  const entry = JSON.stringify(new URL(`./${name}.ts`, moduleUrl).href);
  return [`import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then(({ register }) => { register(); return import(${entry}); })`, { eval: true }];
}
