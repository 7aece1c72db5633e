/**
 * receiver/index.ts — the receiver package's public surface: the SMTP/LMTP server that takes
 * mail in and answers 250 only after the commit (smtp-receiver.ts), the listeners and the
 * per-listener policies built from the config (listeners.ts), protocol checks, DKIM signing keys
 * and the PROXY protocol.
 */
export { SmtpReceiver } from './smtp-receiver.ts';
export {
  resolveListeners, createClientLimits, createAuthThrottle, createSenderAuth, createContentFilter, type ListenerSpec,
} from './listeners.ts';
export type { ClientLimits } from './client-limits.ts';
export { SpoolSpace } from './protocol-checks.ts';
export { checkSigningKey, loadDirectoryKey, type DirectoryDkimLookup } from './dkim-keys.ts';
export { ProxyHeaderError, PROXY_V2_SIGNATURE, proxyV1Line } from './proxy-v2.ts';
