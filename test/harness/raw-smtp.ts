/*
 * raw-smtp.ts - a byte-level SMTP client over net.Socket, for tests that send what a real client
 * library never would (bare LF, NUL bytes, huge lines, pipelined garbage, a PROXY header) and
 * read the server's replies one by one.
 *
 * Exports:
 *   RawSmtpClient.connect(port, host?, timeoutMs?, localAddress?, noDelay?): Promise<RawSmtpClient>
 *                              localAddress: the source address to connect from (127.0.0.2 …);
 *                              noDelay: TCP_NODELAY, as a sending MTA sets it (default off)
 *     write(bytes)             send raw bytes (errors after the server closed are swallowed)
 *     readReply(timeoutMs)     the next complete reply (multi-line joined), or { type: "closed" }
 *                              once the server closed; a line that is not SMTP (e.g. "* BAD ...")
 *                              comes back as { type: "other" }. Rejects when nothing complete
 *                              arrives within timeoutMs: a hung server fails the test.
 *     command(line, timeoutMs) write(line + CRLF) then readReply
 *     startTls(servername?, timeoutMs?)  STARTTLS already answered 220: wrap the socket in TLS
 *                              (no verify); rejects on a failed handshake, a close, or a timeout
 *     waitClosed(timeoutMs)    resolves true once the server closed the connection
 *     close()                  destroy the socket
 *   RawReply
 *
 * What can go wrong: readReply timing out (the error says what was read so far).
 */
import net from "node:net";
import tls from "node:tls";

export type RawReply =
  | { type: "reply"; code: number; lines: string[]; text: string }
  | { type: "other"; text: string }
  | { type: "closed"; error?: string };

export class RawSmtpClient {
  private buffer = "";
  private closed = false;
  private closeError: string | undefined;
  private wake: (() => void) | undefined;

  private constructor(private socket: net.Socket | tls.TLSSocket) {
    this.attach(socket);
  }

  /** Connects to host:port (no greeting is read). */
  static connect(port: number, host = "127.0.0.1", timeoutMs = 5_000, localAddress?: string, noDelay = false): Promise<RawSmtpClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host, noDelay, ...(localAddress ? { localAddress } : {}) });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to ${host}:${port} timed out`));
      }, timeoutMs);
      socket.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        resolve(new RawSmtpClient(socket));
      });
    });
  }

  private attach(socket: net.Socket | tls.TLSSocket): void {
    socket.on("data", (d: Buffer) => {
      this.buffer += d.toString("latin1");
      this.wake?.();
    });
    const onGone = (err?: Error): void => {
      if (err && !this.closeError) this.closeError = `${(err as NodeJS.ErrnoException).code ?? ""} ${err.message}`.trim();
      this.closed = true;
      this.wake?.();
    };
    socket.on("error", onGone);
    socket.on("end", () => onGone());
    socket.on("close", () => onGone());
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Sends raw bytes; after the server closed, the write error is ignored (see readReply). */
  write(bytes: string | Buffer): void {
    if (this.closed || this.socket.destroyed) return;
    this.socket.write(typeof bytes === "string" ? Buffer.from(bytes, "latin1") : bytes);
  }

  /** Takes one complete reply from the buffer, if there is one. */
  private takeReply(): RawReply | undefined {
    const lines: string[] = [];
    let pos = 0;
    for (;;) {
      const nl = this.buffer.indexOf("\n", pos);
      if (nl < 0) return undefined;
      const line = this.buffer.slice(pos, nl).replace(/\r$/, "");
      pos = nl + 1;
      const m = /^(\d{3})([ -]?)(.*)$/.exec(line);
      if (!m) {
        if (lines.length > 0) return undefined; // a broken multi-line reply: wait for the rest
        this.buffer = this.buffer.slice(pos);
        return { type: "other", text: line };
      }
      lines.push(line);
      if (m[2] !== "-") {
        this.buffer = this.buffer.slice(pos);
        return { type: "reply", code: Number(m[1]), lines, text: lines.join("\n") };
      }
    }
  }

  /** The next reply; { type: "closed" } when the server closed first; rejects on timeout. */
  async readReply(timeoutMs = 5_000): Promise<RawReply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const reply = this.takeReply();
      if (reply) return reply;
      if (this.closed) return { type: "closed", ...(this.closeError ? { error: this.closeError } : {}) };
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no complete SMTP reply within ${timeoutMs} ms (the server hangs?); buffered: ${JSON.stringify(this.buffer.slice(0, 300))}`);
      await this.nextEvent(left);
    }
  }

  /** Resolves when data arrives or the connection closes, or after `ms`. */
  private nextEvent(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }

  /** Sends one command line ending in CRLF and reads its reply. */
  command(line: string, timeoutMs = 5_000): Promise<RawReply> {
    this.write(`${line}\r\n`);
    return this.readReply(timeoutMs);
  }

  /**
   * Upgrades to TLS after the server's 220 to STARTTLS (certificate not verified). Rejects when
   * the handshake fails, when the connection closes first (close() during the handshake only
   * closes the TCP socket, and the TLS socket then ends without an error), or after timeoutMs.
   */
  startTls(servername = "tandem.test", timeoutMs = 10_000): Promise<void> {
    const plain = this.socket;
    plain.removeAllListeners("data");
    plain.removeAllListeners("end");
    plain.removeAllListeners("close");
    return new Promise((resolve, reject) => {
      const secure = tls.connect({ socket: plain, rejectUnauthorized: false, servername }, () => {
        clearTimeout(timer);
        secure.removeListener("error", fail);
        secure.removeListener("close", closed);
        this.socket = secure;
        this.buffer = "";
        this.attach(secure);
        resolve();
      });
      const fail = (err: Error): void => {
        clearTimeout(timer);
        secure.removeListener("close", closed);
        this.closed = true;
        secure.destroy();
        reject(err);
      };
      const closed = (): void => fail(new Error("the connection closed during the TLS handshake"));
      const timer = setTimeout(() => fail(new Error(`no TLS handshake within ${timeoutMs} ms`)), timeoutMs);
      secure.once("error", fail);
      secure.once("close", closed);
    });
  }

  /** Resolves true once the server has closed the connection, false after timeoutMs. */
  async waitClosed(timeoutMs = 5_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await this.nextEvent(left);
    }
    return true;
  }

  close(): void {
    this.socket.destroy();
  }
}
