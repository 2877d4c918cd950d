// TLS in the configuration (issue 14 items 1-3). `tls: {cert, key, ca}` at the top level is every
// node's; under a node it is that node's own (it wins). The paths are read on the machine the node
// runs on, so a top-level entry means "each machine keeps its own node's files at these paths",
// and the config parser never opens them: only the node that uses them does (src/node/tls.ts),
// where a missing or expired file becomes a one-line start-up error.
//
// The rules checked here, with the file's other values:
// - the link is mutual TLS or plain TLS-less for the whole volume: some nodes with TLS and some
//   without could never connect, so a node without `tls` where another has it is an error;
// - `nbdTls: on | require` needs TLS on every node (each one serves NBD with its own certificate).
import path from 'node:path';
import { z } from 'zod';

/** Absolute paths of one node's PEM files. */
export interface TlsFiles {
  /** This node's certificate (chain); it names the node (DNS subjectAltName or CN) for the link. */
  cert: string;
  key: string;
  /** The CA that signs every node's certificate; peers' certificates are checked against it. */
  ca: string;
}

/**
 * NBD for hosts (proto.md "TLS support"): off is NOTLS (STARTTLS answered UNSUP); on is
 * SELECTIVETLS with no TLS-only export (a client may upgrade); require is FORCEDTLS.
 */
export type NbdTlsMode = 'off' | 'on' | 'require';

export const tlsSchema = z.strictObject({ cert: z.string(), key: z.string(), ca: z.string() });
export const nbdTlsModes = ['off', 'on', 'require'] as const;

type RawTls = z.infer<typeof tlsSchema>;

/** A key path and message: config.ts turns it into its one-line error. */
export type TlsFieldProblem = { keyPath: string; message: string };

function resolveFiles(raw: RawTls, baseDir: string): TlsFiles {
  return { cert: path.resolve(baseDir, raw.cert), key: path.resolve(baseDir, raw.key), ca: path.resolve(baseDir, raw.ca) };
}

/**
 * Each node's TLS files (null: none), in the order of `nodes`, or the first problem. `nbdTls`
 * defaults to off.
 */
export function buildTls(
  top: RawTls | undefined,
  nodes: ReadonlyArray<{ name: string; tls: RawTls | undefined }>,
  nbdTls: NbdTlsMode,
  baseDir: string,
): { perNode: Array<TlsFiles | null> } | TlsFieldProblem {
  const perNode = nodes.map((n) => {
    const raw = n.tls ?? top;
    return raw === undefined ? null : resolveFiles(raw, baseDir);
  });
  const withTls = nodes.filter((_, i) => perNode[i] !== null);
  if (withTls.length > 0 && withTls.length < nodes.length) {
    const without = nodes.find((_, i) => perNode[i] === null)!;
    return {
      keyPath: `nodes.${without.name}.tls`,
      message: `missing: node ${withTls[0]!.name} links with TLS, so every node needs tls (or set it once at the top level)`,
    };
  }
  if (nbdTls !== 'off' && withTls.length === 0) {
    return { keyPath: 'nbdTls', message: `${nbdTls} needs tls: {cert, key, ca} (the certificate each node shows its hosts)` };
  }
  return { perNode };
}
