// Requests to a node's admin port, over HTTP or HTTPS (issue 14 item 3), by the CLI and by the
// dashboard's feed of the other nodes. node:https rather than fetch: fetch cannot be given a CA per
// request, and a node's certificate is usually signed by the volume's own CA (--ca, tls.ca).
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { loadConfig } from '../config/config.js';
import { describeTlsError } from '../node/tls.js';

export interface AdminAnswer {
  ok: boolean;
  status: number;
  text: string;
}

/** Where the CLI finds the CA for https:// admin URLs: --ca, else TWINBLOCK_CA, else --config's tls.ca. */
export interface CaOptions {
  ca?: string;
  config?: string;
}

/** The CA's PEM, or null (then the system's roots, and NODE_EXTRA_CA_CERTS, are used). */
export function caOf(opts: CaOptions): Buffer | null {
  const file = opts.ca ?? (process.env['TWINBLOCK_CA'] || undefined) ?? caFileInConfig(opts.config);
  if (file === undefined) return null;
  try {
    return readFileSync(file);
  } catch (err) {
    throw new Error(`cannot read CA ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function caFileInConfig(configFile: string | undefined): string | undefined {
  if (configFile === undefined) return undefined;
  const config = loadConfig(configFile);
  return config.nodes.find((n) => n.tls !== null)?.tls?.ca;
}

function describeRequestError(err: NodeJS.ErrnoException, timeoutMs: number, https: boolean): string {
  if (err.name === 'TimeoutError' || err.code === 'ETIMEDOUT') return `no answer within ${timeoutMs / 1000}s`;
  switch (err.code) {
    case 'ECONNREFUSED': return 'connection refused (is the node running?)';
    case 'ENOTFOUND': return 'host not found';
    case 'EHOSTUNREACH': return 'host unreachable';
    case 'ECONNRESET': return https ? 'connection reset (does the node serve HTTPS? try http://)' : 'connection reset (does the node serve HTTPS? try https://)';
  }
  const tlsFailure = describeTlsError(err);
  if (tlsFailure !== null) return `${tlsFailure.replace("the peer's", "the node's")}${/not signed/.test(tlsFailure) ? ' (give its CA with --ca FILE)' : ''}`;
  return err.message;
}

/**
 * One request; a failure to reach the node is an Error with a one-line message. An answer longer
 * than maxBytes (default 16 MiB) is cut off and is an error: no node answers that much.
 */
export function adminRequest(url: URL, opts: { method: string; body?: string; headers?: Record<string, string>; timeoutMs: number; ca: Buffer | null; maxBytes?: number }): Promise<AdminAnswer> {
  const maxBytes = opts.maxBytes ?? 16 * 1024 * 1024;
  const secure = url.protocol === 'https:';
  const requestFn = secure ? https.request : http.request;
  return new Promise((resolve, reject) => {
    const req = requestFn(url, {
      method: opts.method, headers: opts.headers, signal: AbortSignal.timeout(opts.timeoutMs),
      ...(secure && opts.ca !== null ? { ca: opts.ca } : {}),
    }, (res) => {
      const chunks: Buffer[] = [];
      let receivedBytes = 0;
      res.on('data', (chunk: Buffer) => {
        receivedBytes += chunk.length;
        if (receivedBytes > maxBytes) {
          req.destroy();
          reject(new Error(`admin at ${url.origin} answered more than ${maxBytes} bytes`));
        } else chunks.push(chunk);
      });
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        resolve({ ok: status >= 200 && status < 300, status, text: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', (err) => reject(new Error(`cannot reach admin at ${url.origin}: ${describeRequestError(err, opts.timeoutMs, secure)}`)));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      const reason = err.name === 'AbortError' ? `no answer within ${opts.timeoutMs / 1000}s` : describeRequestError(err, opts.timeoutMs, secure);
      const wrapped = new Error(`cannot reach admin at ${url.origin}: ${reason}`);
      (wrapped as Error & { timedOut?: boolean }).timedOut = err.name === 'AbortError';
      reject(wrapped);
    });
    req.end(opts.body);
  });
}
