/**
 * console/html.ts — server-side HTML for the console: an escaping template tag and the page
 * frame. Every interpolated value is escaped unless it is Html made by this tag (or raw()).
 *
 * The frame loads only /console/assets/* (same origin): the strict Content-Security-Policy set
 * by console.ts allows nothing else, and no inline script or style is used anywhere.
 */
export class Html {
  constructor(readonly text: string) {}
  toString(): string { return this.text; }
}

export function esc(v: unknown): string {
  return String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]!));
}

const part = (v: unknown): string => (v instanceof Html ? v.text : Array.isArray(v) ? v.map(part).join('') : v === undefined || v === null || v === false ? '' : esc(v));

export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0];
  values.forEach((v, i) => { out += part(v) + strings[i + 1]; });
  return new Html(out);
}

export const raw = (s: string) => new Html(s);

/** "4.2s ago", "3m ago". */
export function ago(ms: number | undefined): string {
  if (ms === undefined) return '-';
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)}m`;
  return `${(ms / 3_600_000).toFixed(1)}h`;
}

export const when = (t: number | string | undefined) => (t === undefined || t === '' ? '-' : new Date(t).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z'));

const NAV: Array<[string, string]> = [['cluster', 'Cluster'], ['queues', 'Queues'], ['operations', 'Operations'], ['charts', 'Charts'], ['tracking', 'Tracking']];

export function page(opts: { title: string; nav?: string; node: string; user?: { name: string; role: string; csrf: string }; scripts?: string[]; flash?: string; error?: string }, body: Html): string {
  const u = opts.user;
  return `<!doctype html>\n${html`<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${opts.title} · Tandem ${opts.node}</title>
<link rel="stylesheet" href="/console/assets/console.css">
${(opts.scripts ?? []).map((s) => (s.endsWith('.css') ? html`<link rel="stylesheet" href="/console/assets/${s}">` : html`<script src="/console/assets/${s}" defer></script>`))}
</head><body data-csrf="${u?.csrf ?? ''}">
<header><span class="brand">Tandem</span><span class="node">node ${opts.node}</span>
${u ? html`<nav>${NAV.map(([k, label]) => html`<a href="/console/${k}" class="${k === opts.nav ? 'on' : ''}">${label}</a>`)}</nav>
<form method="post" action="/console/logout" class="logout"><input type="hidden" name="_csrf" value="${u.csrf}"><span>${u.name} (${u.role})</span> <button>Log out</button></form>` : ''}
</header>
<main>
${opts.flash ? html`<p class="flash">${opts.flash}</p>` : ''}${opts.error ? html`<p class="error">${opts.error}</p>` : ''}
<h1>${opts.title}</h1>
${body}
</main></body></html>`.text}`;
}
