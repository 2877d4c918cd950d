// What the admin server reads from a client: the request target, the query and an action's body,
// and the answer to a request node:http could not even parse (issue 9 item 3). Everything here
// treats the client as hostile: a target or body it cannot parse is a 4xx with a one-line JSON
// error, never a 500, and nothing a client sends reaches a log line unescaped (clientText).
import type http from 'node:http';
import type net from 'node:net';
import { clientText } from '../log.js';

/** A client-side problem the server answers with this HTTP status and message. */
export class AdminActionError extends Error {
  override readonly name = 'AdminActionError';
  constructor(readonly httpStatus: number, message: string) {
    super(message);
  }
}

/** The client closed or reset its connection before its request was complete: nobody to answer. */
export class ClientGoneError extends Error {
  override readonly name = 'ClientGoneError';
}

export interface RequestTarget {
  /** Exactly as sent, still percent-encoded: routes are matched on it byte for byte. */
  path: string;
  /** Decoded query parameters in order (a repeated key: the last one wins where they are merged). */
  query: Array<[string, string]>;
}

/**
 * Split an origin-form target ("/path?query", RFC 9112 section 3.2.1) by hand. new URL() would
 * read "//x/demote" as host "x" and path "/demote", and throw on "//%": the path is only ever
 * compared with the routes, so it needs no parsing beyond finding the '?'. Absolute-form and
 * asterisk-form targets are refused: this server is not a proxy and has no OPTIONS *.
 */
export function parseTarget(target: string): RequestTarget | { error: string } {
  if (!target.startsWith('/')) return { error: 'request target must be a path starting with "/"' };
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  // Never decoded, but a "%" that starts no escape is not a path (RFC 3986 section 2.1).
  if (/%(?![0-9A-Fa-f]{2})/.test(path)) return { error: 'bad percent-encoding in the path' };
  const query: Array<[string, string]> = [];
  if (q < 0) return { path, query };
  for (const part of target.slice(q + 1).split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = decodeQueryPart(eq < 0 ? part : part.slice(0, eq));
    const value = decodeQueryPart(eq < 0 ? '' : part.slice(eq + 1));
    if (key === null || value === null) return { error: 'bad percent-encoding in the query string' };
    query.push([key, value]);
  }
  return { path, query };
}

/** application/x-www-form-urlencoded decoding; null for "%", "%zz" or bytes that are not UTF-8. */
function decodeQueryPart(text: string): string | null {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '));
  } catch {
    return null;
  }
}

/**
 * Read a request body of at most maxBytes. A declared Content-Length over the limit is refused
 * before reading anything; a client that goes away mid-body is a ClientGoneError (the caller logs
 * one line and answers nobody), not an error with a stack (issue 9 item 6).
 */
export function readBody(req: http.IncomingMessage, maxBytes: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > maxBytes) return Promise.reject(new AdminActionError(413, `request body too large (limit ${maxBytes} bytes)`));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    const stop = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onGone);
      req.off('close', onGone);
    };
    const onData = (chunk: Buffer): void => {
      bytes += chunk.length;
      if (bytes <= maxBytes) chunks.push(chunk);
      else {
        // The rest is read and dropped (the stream stays flowing) until the answer closes it.
        stop();
        reject(new AdminActionError(413, `request body too large (limit ${maxBytes} bytes)`));
      }
    };
    const onEnd = (): void => {
      stop();
      resolve(Buffer.concat(chunks));
    };
    const onGone = (): void => {
      stop();
      reject(new ClientGoneError(`the client went away after ${bytes} bytes of the request body`));
    };
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onGone);
    req.once('close', onGone);
  });
}

/** An action's parameters: the JSON object body, then query parameters (booleans for 1/0/true/false). */
export function actionParams(bodyText: string, query: Array<[string, string]>): Record<string, unknown> {
  let body: unknown = {};
  if (bodyText.trim() !== '') {
    try {
      body = JSON.parse(bodyText);
    } catch {
      throw new AdminActionError(400, 'request body is not JSON');
    }
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new AdminActionError(400, 'request body must be a JSON object');
  // No prototype: a client's "__proto__" key is just a key.
  const params = Object.assign(Object.create(null) as Record<string, unknown>, body);
  // ?force=1 or ?force=true read as booleans, so curl -X POST '.../promote?force=1' works too.
  for (const [key, value] of query) params[key] = value === '1' || value === 'true' ? true : value === '0' || value === 'false' ? false : value;
  return params;
}

/** The one-line JSON error body every refusal carries. */
export function errorBody(message: string): string {
  return `${JSON.stringify({ error: message })}\n`;
}

const statusTexts: Record<number, string> = { 400: 'Bad Request', 405: 'Method Not Allowed', 408: 'Request Timeout', 413: 'Content Too Large', 431: 'Request Header Fields Too Large' };

/**
 * Answer on a raw socket (node:http gives no response object for a request it could not parse, or
 * for CONNECT) with a JSON error, then close: after a parse error the byte stream cannot be trusted
 * to hold another request.
 */
export function answerRaw(socket: net.Socket, status: number, message: string): void {
  const body = errorBody(message);
  socket.write(
    `HTTP/1.1 ${status} ${statusTexts[status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\ncache-control: no-store\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
  socket.destroySoon();
}

/** Status and one-line message for a request node:http refused while parsing or waiting for it. */
export function clientErrorAnswer(err: NodeJS.ErrnoException & { reason?: unknown }): [number, string] {
  switch (err.code) {
    case 'HPE_HEADER_OVERFLOW':
      return [431, 'request header fields too large'];
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return [413, 'chunk extensions too large'];
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return [408, 'request not received in time (see the admin time limits in README.md)'];
    default: {
      // llhttp's reason is a fixed phrase ("Invalid method encountered"); clipped all the same.
      const reason = typeof err.reason === 'string' ? err.reason : err.message;
      return [400, `malformed HTTP request: ${clientText(reason, 120)}`];
    }
  }
}
