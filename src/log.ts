// Logging: pino JSON lines on stderr (stdout stays free for command output such as `demo`'s URIs
// and `status --json`), or a human-readable form for people at a terminal.
//
// Both modes write synchronously. Logs are not on the per-request path, and the lines that matter
// most ("hardened N bytes on shutdown", the fatal error before exit) are written right before
// process.exit, where an asynchronous buffer would be dropped.
import os from 'node:os';
import { pino, type Logger } from 'pino';
import PinoPretty from 'pino-pretty';

export type { Logger } from 'pino';

export type LogFormat = 'json' | 'pretty';

export const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof logLevels)[number];

export interface LoggerOptions {
  /** Default: env TWINBLOCK_LOG ("pretty" or "json"), else json. */
  format?: LogFormat | undefined;
  /** Default: env TWINBLOCK_LOG_LEVEL, else info. */
  level?: string | undefined;
  /** Bound into every line, e.g. { node: 'a' }, so two nodes' logs can be interleaved and still read. */
  bindings?: Record<string, unknown>;
  /** Where JSON lines go; default stderr. Tests pass a stream to capture them. */
  destination?: NodeJS.WritableStream;
  /** Environment to read defaults from; default process.env. */
  env?: NodeJS.ProcessEnv;
}

function chooseFormat(requested: string | undefined): LogFormat {
  if (requested === undefined || requested === '') return 'json';
  if (requested === 'json' || requested === 'pretty') return requested;
  throw new Error(`bad log format "${requested}" (use json or pretty)`);
}

function chooseLevel(requested: string | undefined): LogLevel {
  if (requested === undefined || requested === '') return 'info';
  const level = requested.toLowerCase();
  if ((logLevels as readonly string[]).includes(level)) return level as LogLevel;
  throw new Error(`bad log level "${requested}" (use one of ${logLevels.join(', ')})`);
}

/** Build the process logger; throws a one-line Error for a bad format or level. */
export function createLogger(opts: LoggerOptions = {}): Logger {
  const env = opts.env ?? process.env;
  const format = chooseFormat(opts.format ?? env['TWINBLOCK_LOG']);
  const level = chooseLevel(opts.level ?? env['TWINBLOCK_LOG_LEVEL']);
  const options = { level, base: { pid: process.pid, hostname: os.hostname(), ...opts.bindings } };
  if (format === 'pretty') {
    const stream = PinoPretty({
      sync: true,
      destination: opts.destination ?? 2,
      colorize: opts.destination === undefined && process.stderr.isTTY === true,
      // node and volume are on every line; as a prefix they identify the node without the noise.
      ignore: 'pid,hostname,node,volume',
      messageFormat: '{if node}[{node}] {end}{msg}',
      translateTime: 'SYS:HH:MM:ss.l',
    });
    return pino(options, stream);
  }
  return pino(options, opts.destination ?? pino.destination({ fd: 2, sync: true }));
}

// Pure, so the core can use it too (the link session's refusal reasons).
export { CLIENT_TEXT_MAX_BYTES, clientText } from './core/client-text.js';
