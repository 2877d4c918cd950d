// The live dashboard on the admin port (issue 15): GET / serves one page, GET /dashboard.js its
// script (compiled by tsc from web/client.ts, so `npm run build` puts it beside this file),
// GET /dashboard/events a server-sent event stream of every node of the volume (dashboard-feed.ts),
// GET /dashboard/state this node's part of it (what the other nodes' dashboards fetch).
// The page's buttons POST to the admin server's own actions (/promote, /demote, /verify) with the
// token the operator types: the dashboard adds no way to act, and reads stay open like /status.
//
// Cheap when nobody looks: nothing is sampled or fetched until a page opens a stream, and the
// ticks stop with the last one. A page that stops reading is dropped, not buffered for.
import { readFileSync } from 'node:fs';
import type http from 'node:http';
import type { Logger } from 'pino';
import { errorBody } from './http-input.js';
import { DashboardFeed, type DashboardFeedOptions } from './dashboard-feed.js';
import type { DashboardEvent } from './dashboard-types.js';
import { FAVICON_SVG, PAGE_HTML } from './web/page.js';

/** Updates per stream: at most two a second (the issue asks for a few at most). */
export const DASHBOARD_INTERVAL_MS = 500;
/** A minute of samples per node at two a second. */
const HISTORY_SAMPLES = 120;
/** Streams open at once; more pages than this on one node are a mistake or an attack. */
const MAX_STREAMS = 32;
/** A page that leaves this much unread is dropped (its browser reconnects when it can). */
const MAX_UNSENT_BYTES = 1024 * 1024;
/** What EventSource waits before reconnecting after the stream ends. */
const RETRY_MS = 1000;

export interface DashboardOptions extends Omit<DashboardFeedOptions, 'intervalMs' | 'fetchTimeoutMs' | 'historySamples'> {
  log: Logger;
  intervalMs?: number;
}

interface Asset {
  contentType: string;
  body: () => string;
}

let clientScript: string | null = null;

/** The compiled page script, read once (a missing file is a build problem, said so on the page). */
function readClientScript(): string {
  // Without its source map comment: the map is not served, and a 404 is an error in the console.
  clientScript ??= readFileSync(new URL('./web/client.js', import.meta.url), 'utf8').replace(/^\/\/# sourceMappingURL=.*$/m, '');
  return clientScript;
}

const assets: Readonly<Record<string, Asset>> = {
  '/': { contentType: 'text/html; charset=utf-8', body: () => PAGE_HTML },
  '/dashboard.js': { contentType: 'text/javascript; charset=utf-8', body: readClientScript },
  '/favicon.svg': { contentType: 'image/svg+xml', body: () => FAVICON_SVG },
  // Browsers ask for /favicon.ico whatever the page says; an SVG answers it (a 404 is a console error).
  '/favicon.ico': { contentType: 'image/svg+xml', body: () => FAVICON_SVG },
};

function answer(res: http.ServerResponse, status: number, contentType: string, text: string, headers: Record<string, string> = {}): void {
  res.setTimeout(30_000);
  res.writeHead(status, { 'content-type': contentType, 'content-length': String(Buffer.byteLength(text)), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

function frame(event: DashboardEvent): string {
  return `data: ${JSON.stringify(event)}\n\n`;
}

export class Dashboard {
  private readonly feed: DashboardFeed;
  private readonly streams = new Set<http.ServerResponse>();
  private readonly intervalMs: number;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(private readonly opts: DashboardOptions) {
    this.intervalMs = opts.intervalMs ?? DASHBOARD_INTERVAL_MS;
    this.feed = new DashboardFeed({ ...opts, intervalMs: this.intervalMs, fetchTimeoutMs: Math.max(1000, 2 * this.intervalMs), historySamples: HISTORY_SAMPLES });
  }

  /** Answers the dashboard's paths (true); false for any other path, which the admin server routes. */
  handle(req: http.IncomingMessage, res: http.ServerResponse, path: string): boolean {
    const asset = Object.hasOwn(assets, path) ? assets[path] : undefined;
    if (asset === undefined && path !== '/dashboard/state' && path !== '/dashboard/events') return false;
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'HEAD') {
      req.resume();
      answer(res, 405, 'application/json; charset=utf-8', errorBody('method not allowed (use GET)'), { allow: 'GET' });
    } else if (asset !== undefined) {
      this.sendAsset(res, asset);
    } else if (path === '/dashboard/state') {
      answer(res, 200, 'application/json; charset=utf-8', JSON.stringify(this.opts.getState()));
    } else {
      this.openStream(method, res);
    }
    return true;
  }

  /** Ends every stream and stops the ticks (the node is stopping). */
  close(): void {
    this.closed = true;
    this.stopTicks();
    for (const res of this.streams) res.end();
    this.streams.clear();
  }

  private sendAsset(res: http.ServerResponse, asset: Asset): void {
    let body: string;
    try {
      body = asset.body();
    } catch (err) {
      this.opts.log.error({ err }, 'dashboard: page asset missing (run npm run build)');
      return answer(res, 500, 'application/json; charset=utf-8', errorBody('dashboard script missing: this node was not built completely (npm run build)'));
    }
    answer(res, 200, asset.contentType, body);
  }

  private openStream(method: string, res: http.ServerResponse): void {
    if (this.closed || this.streams.size >= MAX_STREAMS) {
      const why = this.closed ? 'this node is stopping' : `too many dashboard streams open (${MAX_STREAMS})`;
      return answer(res, 503, 'application/json; charset=utf-8', errorBody(why), { 'retry-after': '5' });
    }
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
    if (method === 'HEAD') {
      res.end();
      return;
    }
    res.write(`retry: ${RETRY_MS}\n\n`);
    this.streams.add(res);
    res.on('close', () => {
      this.streams.delete(res);
      if (this.streams.size === 0) this.stopTicks();
    });
    // The first stream starts the ticks; every stream starts with the whole history.
    if (this.timer === null) {
      this.feed.tick(Date.now());
      this.timer = setInterval(() => this.broadcast(), this.intervalMs);
      this.timer.unref();
    }
    this.send(res, frame(this.feed.fullEvent(Date.now())));
  }

  private broadcast(): void {
    let text: string;
    try {
      text = frame(this.feed.tick(Date.now()));
    } catch (err) {
      this.opts.log.error({ err }, 'dashboard: building an update failed');
      return;
    }
    for (const res of this.streams) this.send(res, text);
  }

  private send(res: http.ServerResponse, text: string): void {
    if (res.writableLength > MAX_UNSENT_BYTES) {
      this.opts.log.info({ unsentBytes: res.writableLength }, 'dashboard: a page stopped reading its stream; dropped');
      res.destroy();
      return;
    }
    res.write(text);
  }

  private stopTicks(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}
