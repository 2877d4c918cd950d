// Admin HTTP of one node (DESIGN.md "Interfaces"): GET /status (JSON), GET /metrics (Prometheus
// text), POST /<action> (promote, demote, ... supplied by the node). Plain node:http: the surface
// is four routes, and a framework would be more code to trust than the routes themselves.
//
// Actions (every POST: they change roles or discard data) need `Authorization: Bearer <adminToken>`
// when the config sets one (issue 14 item 3; RFC 6750), compared in constant time; a missing or
// wrong token is a 401 and a log line. Reads (/status, /metrics) stay open: they are for
// monitoring. Without a token the config allows only loopback admin addresses. Bad and slow
// clients still cannot hurt the node (issue 9): a request that cannot be parsed is a 4xx
// with a one-line JSON error, paths match exactly, every connection has time limits, and the
// number of connections is capped so an admin flood cannot take the file descriptors that NBD
// hosts and the replication link need.
import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type net from 'node:net';
import type { Logger } from 'pino';
import { formatAddress } from '../config/config.js';
import { clientText } from '../log.js';
import {
  actionParams, AdminActionError, answerRaw, clientErrorAnswer, ClientGoneError, errorBody, parseTarget, readBody, type RequestTarget,
} from './http-input.js';
import type { NodeMetrics } from './metrics.js';
import { serverCredentials, type TlsMaterial } from '../node/tls.js';

export { AdminActionError } from './http-input.js';

/** An action gets the JSON body of the POST (or {}), plus query parameters as strings. */
export type AdminAction = (params: Record<string, unknown>) => Promise<object>;

/** Action bodies are a few flags; anything bigger is a mistake or an attack. */
const MAX_ACTION_BODY_BYTES = 64 * 1024;

/** Time and connection limits (issue 9 item 5); the defaults suit an operator's curl and Prometheus. */
export interface AdminLimits {
  /** A request's head must arrive within this from its first byte (or from connect): slowloris. */
  headersTimeoutMs: number;
  /** The whole request, head and body; at least headersTimeoutMs. */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: number;
  /** A response the client stops reading is abandoned (connection closed) after this long without progress. */
  idleTimeoutMs: number;
  /** Further connections are closed at once while this many are open. */
  maxConnections: number;
}

export const defaultAdminLimits: Readonly<AdminLimits> = {
  headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, keepAliveTimeoutMs: 5_000, idleTimeoutMs: 30_000, maxConnections: 512,
};

/** A dropped-connection warning at most this often, with the count since the last one. */
const DROP_WARNING_INTERVAL_MS = 60_000;

export interface AdminServerOptions {
  host: string;
  /** 0 picks a free port; the returned handle has the real one. */
  port: number;
  getStatus: () => object;
  metrics: NodeMetrics;
  log: Logger;
  actions?: Record<string, AdminAction>;
  /**
   * GET /usage (issue 14 item 7): the query's parameters in; the answer, or an AdminActionError
   * (400: a query it cannot answer).
   */
  getUsage?: (query: Record<string, string>) => Promise<object>;
  /** Bearer token every action needs (null: none; the config then allows only loopback). */
  adminToken?: string | null;
  /** Serve HTTPS with this node's certificate; null or absent: plain HTTP. */
  tls?: TlsMaterial | null;
  /**
   * More read-only paths (issue 15: the dashboard, src/admin/dashboard.ts): answers and returns
   * true for a path it serves, false for any other.
   */
  pages?: (req: http.IncomingMessage, res: http.ServerResponse, path: string) => boolean;
  /** Overrides of defaultAdminLimits (tests use short timeouts). */
  limits?: Partial<AdminLimits>;
}

export interface AdminServer {
  port: number;
  close(): Promise<void>;
}

interface Context {
  opts: AdminServerOptions;
  limits: AdminLimits;
  log: Logger;
}

function send(res: http.ServerResponse, ctx: Context, status: number, contentType: string, text: string, headers: Record<string, string> = {}): void {
  // Bounds a client that stops reading the answer (node:http has no limit once the request is in).
  res.setTimeout(ctx.limits.idleTimeoutMs);
  res.writeHead(status, { 'content-type': contentType, 'content-length': String(Buffer.byteLength(text)), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

function sendJson(res: http.ServerResponse, ctx: Context, status: number, body: unknown): void {
  send(res, ctx, status, 'application/json; charset=utf-8', `${JSON.stringify(body, null, 2)}\n`);
}

/** Every refusal: a 4xx (or 500) with a one-line {"error": ...} body. */
function sendError(res: http.ServerResponse, ctx: Context, status: number, message: string, headers: Record<string, string> = {}): void {
  send(res, ctx, status, 'application/json; charset=utf-8', errorBody(message), headers);
}

function methodNotAllowed(res: http.ServerResponse, ctx: Context, allow: string): void {
  sendError(res, ctx, 405, `method not allowed (use ${allow})`, { allow });
}

async function runAction(name: string, action: AdminAction, req: http.IncomingMessage, target: RequestTarget, res: http.ServerResponse, ctx: Context): Promise<void> {
  const log = ctx.log;
  log.info({ action: name }, 'admin action requested');
  let params: Record<string, unknown>;
  try {
    params = actionParams((await readBody(req, MAX_ACTION_BODY_BYTES)).toString('utf8'), target.query);
  } catch (err) {
    if (err instanceof ClientGoneError) {
      // Nobody to answer and nothing to debug: one line, no stack (issue 9 item 6).
      log.info({ action: name, reason: err.message }, 'admin action dropped: the client went away');
      return;
    }
    if (!(err instanceof AdminActionError)) throw err;
    log.warn({ action: name, reason: err.message }, 'admin action refused');
    // The unread rest of a too-large body would be taken for the next request: close after answering.
    return sendError(res, ctx, err.httpStatus, err.message, err.httpStatus === 413 ? { connection: 'close' } : {});
  }
  try {
    sendJson(res, ctx, 200, await action(params));
  } catch (err) {
    const status = err instanceof AdminActionError ? err.httpStatus : 500;
    if (status >= 500) log.error({ err, action: name }, 'admin action failed');
    else log.warn({ action: name, reason: (err as Error).message }, 'admin action refused');
    sendError(res, ctx, status, (err as Error).message);
  }
}

async function route(req: http.IncomingMessage, res: http.ServerResponse, ctx: Context): Promise<void> {
  const method = req.method ?? 'GET';
  // Only actions read a body; drain it elsewhere so keep-alive connections stay usable.
  if (method !== 'POST') req.resume();
  const target = parseTarget(req.url ?? '');
  if ('error' in target) return sendError(res, ctx, 400, target.error);
  // RFC 9112 section 3.2: an HTTP/1.1 request without Host is a 400 (answered here, in JSON).
  if (req.httpVersion === '1.1' && req.headers.host === undefined) return sendError(res, ctx, 400, 'HTTP/1.1 request without a Host header');
  const isRead = method === 'GET' || method === 'HEAD';
  if (target.path === '/status') {
    if (!isRead) return methodNotAllowed(res, ctx, 'GET');
    return sendJson(res, ctx, 200, ctx.opts.getStatus());
  }
  if (target.path === '/metrics') {
    if (!isRead) return methodNotAllowed(res, ctx, 'GET');
    const text = await ctx.opts.metrics.metricsText();
    return send(res, ctx, 200, ctx.opts.metrics.contentType, text);
  }
  if (target.path === '/usage' && ctx.opts.getUsage !== undefined) {
    if (!isRead) return methodNotAllowed(res, ctx, 'GET');
    try {
      return sendJson(res, ctx, 200, await ctx.opts.getUsage(Object.fromEntries(target.query)));
    } catch (err) {
      if (!(err instanceof AdminActionError)) throw err;
      return sendError(res, ctx, err.httpStatus, err.message);
    }
  }
  if (ctx.opts.pages?.(req, res, target.path) === true) return;
  const actions = ctx.opts.actions ?? {};
  const actionName = target.path.slice(1);
  const action = Object.hasOwn(actions, actionName) ? actions[actionName] : undefined;
  if (action === undefined) return sendError(res, ctx, 404, `no such endpoint: ${clientText(target.path, 100)}`);
  if (method !== 'POST') return methodNotAllowed(res, ctx, 'POST');
  const crossSite = crossSiteOrigin(req);
  if (crossSite !== null) {
    req.resume();
    ctx.log.warn({ action: actionName, origin: clientText(crossSite, 100), remote: req.socket.remoteAddress }, 'admin action refused: sent by another site');
    return sendError(res, ctx, 403, `refused: a browser page from ${clientText(crossSite, 100)} may not act on this node`);
  }
  const refused = refusedToken(req, ctx.opts.adminToken ?? null);
  if (refused !== null) {
    req.resume();
    ctx.log.warn({ action: actionName, reason: refused, remote: req.socket.remoteAddress }, 'admin action refused: not authorized');
    return sendError(res, ctx, 401, `unauthorized: ${refused}`, { 'www-authenticate': 'Bearer realm="twinblock"' });
  }
  return runAction(actionName, action, req, target, res, ctx);
}

/**
 * A browser's cross-site request (CSRF): a page from another origin that POSTs to this port. Without
 * an admin token (allowed on loopback only) a form on any web page a person on this machine opens
 * could promote, demote or discard this node; browsers name the page's origin in `Origin` on every
 * cross-origin POST, and the CLI, curl and scripts send none. The dashboard's own page has this
 * port's origin. Returns the foreign origin, or null.
 */
function crossSiteOrigin(req: http.IncomingMessage): string | null {
  const origin = req.headers.origin;
  if (origin === undefined) return null;
  let host: string;
  try {
    host = new URL(origin).host;
  } catch {
    return origin; // "null" (a sandboxed page or a file) or garbage: not this port's page
  }
  return host === req.headers.host ? null : origin;
}

/** Why a request's Authorization does not carry the token (null: it does, or none is set). */
function refusedToken(req: http.IncomingMessage, token: string | null): string | null {
  if (token === null) return null;
  const header = req.headers.authorization;
  if (header === undefined) return 'this node needs an admin token (Authorization: Bearer ...; twinblock --token or TWINBLOCK_ADMIN_TOKEN)';
  const match = /^Bearer ([\x21-\x7e]+)$/i.exec(header.trim());
  if (match === null) return 'the Authorization header is not "Bearer <token>"';
  // Equal-length digests, so the comparison's time says nothing about the token.
  const digest = (s: string): Buffer => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(match[1]!), digest(token)) ? null : 'wrong admin token';
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

/** Requests node:http refuses before our handler sees them: answered in JSON, logged in one debug line. */
function handleRefusals(server: http.Server, ctx: Context): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
    // A reset needs no answer; after part of a response was written, another one would corrupt it.
    if (err.code === 'ECONNRESET' || !socket.writable || socket.bytesWritten > 0) {
      socket.destroy();
      return;
    }
    const [status, message] = clientErrorAnswer(err);
    ctx.log.debug({ status, code: err.code, reason: message }, 'admin request refused before routing');
    answerRaw(socket, status, message);
  });
  // Without these listeners node:http answers CONNECT by closing the socket, Expect by an empty 417.
  server.on('connect', (_req: http.IncomingMessage, socket: net.Socket) => answerRaw(socket, 405, 'method not allowed (CONNECT)'));
  server.on('checkExpectation', (req: http.IncomingMessage, res: http.ServerResponse) => {
    req.resume();
    sendError(res, ctx, 417, 'unsupported Expect header (only 100-continue)', { connection: 'close' });
  });
  let dropped = 0;
  let lastWarningMs = -Infinity;
  server.on('drop', () => {
    dropped++;
    const nowMs = Date.now();
    if (nowMs - lastWarningMs < DROP_WARNING_INTERVAL_MS) return;
    ctx.log.warn({ dropped, maxConnections: ctx.limits.maxConnections }, 'admin connections refused: too many open');
    lastWarningMs = nowMs;
    dropped = 0;
  });
}

/** Start the admin HTTP server; rejects with a one-line Error when the address cannot be used. */
export async function startAdminServer(opts: AdminServerOptions): Promise<AdminServer> {
  const limits: AdminLimits = { ...defaultAdminLimits, ...opts.limits };
  const ctx: Context = { opts, limits, log: opts.log };
  const httpOptions: http.ServerOptions = {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    // How often node:http looks for expired requests: the timeouts above hold to within this.
    connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4))),
    requireHostHeader: false, // checked in route(), to answer in JSON
  };
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    route(req, res, ctx).catch((err: unknown) => {
      opts.log.error({ err, method: req.method, url: clientText(req.url ?? '') }, 'admin request failed');
      if (!res.headersSent) sendError(res, ctx, 500, (err as Error).message);
      else res.destroy();
    });
  };
  // HTTPS with the node's certificate when it has one (issue 14 item 3): the bearer token must not
  // cross the network in clear. Clients are not asked for certificates; the token is the check.
  const server: http.Server = opts.tls == null
    ? http.createServer(httpOptions, handler)
    : https.createServer({ ...httpOptions, ...serverCredentials(opts.tls), handshakeTimeout: limits.headersTimeoutMs }, handler) as unknown as http.Server;
  if (opts.tls != null) {
    server.on('tlsClientError', (err: Error) => opts.log.debug({ reason: err.message }, 'admin: TLS handshake failed'));
  }
  server.maxConnections = limits.maxConnections;
  handleRefusals(server, ctx);
  const port = await listen(server, opts.host, opts.port);
  server.on('error', (err) => opts.log.error({ err }, 'admin server error'));
  opts.log.info({ address: formatAddress({ host: opts.host, port }), https: opts.tls != null }, opts.tls == null ? 'admin HTTP listening' : 'admin HTTPS listening');
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
