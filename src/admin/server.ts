// Admin HTTP of one node (DESIGN.md "Interfaces"): GET /status (JSON), GET /metrics (Prometheus
// text), POST /<action> (promote, demote, ... supplied by the node). Plain node:http: the surface
// is four routes, and a framework would be more code to trust than the routes themselves.
//
// There is no authentication: bind the admin address to loopback or a management network.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { formatAddress } from '../config/config.js';
import type { NodeMetrics } from './metrics.js';

/** An action gets the JSON body of the POST (or {}), plus query parameters as strings. */
export type AdminAction = (params: Record<string, unknown>) => Promise<object>;

/** Action bodies are a few flags; anything bigger is a mistake or an attack. */
const MAX_ACTION_BODY_BYTES = 64 * 1024;

export interface AdminServerOptions {
  host: string;
  /** 0 picks a free port; the returned handle has the real one. */
  port: number;
  getStatus: () => object;
  metrics: NodeMetrics;
  log: Logger;
  actions?: Record<string, AdminAction>;
}

export interface AdminServer {
  port: number;
  close(): Promise<void>;
}

/** Throw from an action to answer with a specific HTTP status (e.g. 409 "already primary"). */
export class AdminActionError extends Error {
  override readonly name = 'AdminActionError';
  constructor(readonly httpStatus: number, message: string) {
    super(message);
  }
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers });
  res.end(text);
}

function methodNotAllowed(res: http.ServerResponse, allow: string): void {
  sendJson(res, 405, { error: `method not allowed (use ${allow})` }, { allow });
}

async function readParams(req: http.IncomingMessage, url: URL): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (bytes > MAX_ACTION_BODY_BYTES) throw new AdminActionError(413, 'request body too large');
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  let body: unknown = {};
  if (text !== '') {
    try {
      body = JSON.parse(text);
    } catch {
      throw new AdminActionError(400, 'request body is not JSON');
    }
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new AdminActionError(400, 'request body must be a JSON object');
  const params: Record<string, unknown> = { ...(body as Record<string, unknown>) };
  // ?force=1 or ?force=true read as booleans, so curl -X POST '.../promote?force=1' works too.
  for (const [key, value] of url.searchParams) params[key] = value === '1' || value === 'true' ? true : value === '0' || value === 'false' ? false : value;
  return params;
}

async function runAction(name: string, action: AdminAction, req: http.IncomingMessage, url: URL, res: http.ServerResponse, log: Logger): Promise<void> {
  log.info({ action: name }, 'admin action requested');
  try {
    const result = await action(await readParams(req, url));
    sendJson(res, 200, result);
  } catch (err) {
    const status = err instanceof AdminActionError ? err.httpStatus : 500;
    if (status >= 500) log.error({ err, action: name }, 'admin action failed');
    else log.warn({ action: name, reason: (err as Error).message }, 'admin action refused');
    sendJson(res, status, { error: (err as Error).message });
  }
}

async function route(req: http.IncomingMessage, res: http.ServerResponse, opts: AdminServerOptions): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://admin');
  const pathname = url.pathname;
  const method = req.method ?? 'GET';
  const isRead = method === 'GET' || method === 'HEAD';
  // Only actions read a body; drain it elsewhere so keep-alive connections stay usable.
  if (method !== 'POST') req.resume();
  if (pathname === '/status') {
    if (!isRead) return methodNotAllowed(res, 'GET');
    return sendJson(res, 200, opts.getStatus());
  }
  if (pathname === '/metrics') {
    if (!isRead) return methodNotAllowed(res, 'GET');
    const text = await opts.metrics.metricsText();
    res.writeHead(200, { 'content-type': opts.metrics.contentType, 'cache-control': 'no-store' });
    res.end(text);
    return;
  }
  const actionName = pathname.slice(1);
  const action = Object.hasOwn(opts.actions ?? {}, actionName) ? opts.actions?.[actionName] : undefined;
  if (action === undefined) {
    req.resume();
    return sendJson(res, 404, { error: `no such endpoint: ${pathname}` });
  }
  if (method !== 'POST') return methodNotAllowed(res, 'POST');
  return runAction(actionName, action, req, url, res, opts.log);
}

function listen(server: http.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const where = formatAddress({ host, port });
      if (err.code === 'EADDRINUSE') reject(new Error(`admin address ${where} is already in use`));
      else if (err.code === 'EADDRNOTAVAIL') reject(new Error(`admin address ${where} is not an address of this machine`));
      else if (err.code === 'EACCES') reject(new Error(`admin address ${where}: permission denied`));
      else reject(new Error(`admin address ${where}: ${err.message}`));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Start the admin HTTP server; rejects with a one-line Error when the address cannot be used. */
export async function startAdminServer(opts: AdminServerOptions): Promise<AdminServer> {
  const server = http.createServer((req, res) => {
    route(req, res, opts).catch((err: unknown) => {
      opts.log.error({ err, url: req.url }, 'admin request failed');
      if (!res.headersSent) sendJson(res, 500, { error: (err as Error).message });
      else res.destroy();
    });
  });
  // Scrapers keep connections alive; a stopping node must not wait for them.
  server.keepAliveTimeout = 5000;
  const port = await listen(server, opts.host, opts.port);
  server.on('error', (err) => opts.log.error({ err }, 'admin server error'));
  opts.log.info({ address: formatAddress({ host: opts.host, port }) }, 'admin HTTP listening');
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
