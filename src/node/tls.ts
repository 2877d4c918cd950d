// A node's TLS material (issue 14 items 1-3), loaded once at start from the files its config names
// (src/config/tls-config.ts) and shared by the three places that use it: the replication link
// (mutual TLS: each side shows its certificate and checks the other's against the CA, and that it
// names the peer node), the admin port (HTTPS), and NBD STARTTLS for hosts.
//
// Everything that can be wrong with the files is found here, at start, as one line: a file that
// cannot be read, a key that is not the certificate's, a certificate that has expired or is not
// yet valid, one the CA did not sign. A node that started would otherwise fail every handshake and
// say so only in its peers' logs.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import type { TlsFiles } from '../config/config.js';

export interface TlsMaterial {
  files: TlsFiles;
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
  /** For servers (link, admin, NBD) and for dialing peers: this node's chain, key and the CA. */
  context: tls.SecureContext;
  /** Who the certificate says this node is (subject and subjectAltName), for logs. */
  subject: string;
  validToMs: number;
}

/** Any problem with the TLS files; message is one line. */
export class TlsConfigError extends Error {
  override readonly name = 'TlsConfigError';
}

function readPem(kind: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new TlsConfigError(`tls: cannot read ${kind} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** Load and check a node's TLS files; `nowMs` is wall-clock time (certificates carry dates). */
export function loadTlsMaterial(files: TlsFiles, nowMs: number): TlsMaterial {
  const cert = readPem('cert', files.cert);
  const key = readPem('key', files.key);
  const ca = readPem('ca', files.ca);
  let x509: X509Certificate;
  let caCert: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new TlsConfigError(`tls: ${files.cert} is not a PEM certificate: ${(err as Error).message}`);
  }
  try {
    caCert = new X509Certificate(ca);
  } catch (err) {
    throw new TlsConfigError(`tls: ${files.ca} is not a PEM certificate: ${(err as Error).message}`);
  }
  const validFromMs = Date.parse(x509.validFrom);
  const validToMs = Date.parse(x509.validTo);
  if (nowMs > validToMs) throw new TlsConfigError(`tls: certificate ${files.cert} expired on ${new Date(validToMs).toISOString()}`);
  if (nowMs < validFromMs) throw new TlsConfigError(`tls: certificate ${files.cert} is not valid before ${new Date(validFromMs).toISOString()}`);
  if (!x509.checkIssued(caCert) || !x509.verify(caCert.publicKey)) {
    throw new TlsConfigError(`tls: certificate ${files.cert} is not signed by the CA in ${files.ca} (peers would refuse it)`);
  }
  let context: tls.SecureContext;
  try {
    context = tls.createSecureContext({ cert, key, ca, minVersion: 'TLSv1.2' });
  } catch (err) {
    // OpenSSL says "key values mismatch" for a key that is not the certificate's.
    throw new TlsConfigError(`tls: cannot use ${files.cert} with ${files.key}: ${(err as Error).message}`);
  }
  const subject = [x509.subject.replace(/\n/g, ', '), x509.subjectAltName].filter((s) => s !== undefined && s !== '').join('; ');
  return { files, cert, key, ca, context, subject, validToMs };
}

/**
 * Options for a TLS server (tls.createServer, https.createServer): these take the PEMs, not a
 * SecureContext (`secureContext` is an option of sockets, and a server ignores it).
 */
export function serverCredentials(material: TlsMaterial): { cert: Buffer; key: Buffer; ca: Buffer; minVersion: 'TLSv1.2' } {
  return { cert: material.cert, key: material.key, ca: material.ca, minVersion: 'TLSv1.2' };
}

/** Does the peer's certificate name this node (DNS subjectAltName, or CN without one)? */
export function certificateNames(cert: tls.PeerCertificate, name: string): boolean {
  return tls.checkServerIdentity(name, cert) === undefined;
}

/** The names a certificate carries, for a refusal's reason. */
export function describeCertificate(cert: tls.PeerCertificate): string {
  const cn = cert.subject?.CN;
  const alt = cert.subjectaltname;
  return [cn === undefined ? null : `CN=${String(cn)}`, alt === undefined || alt === '' ? null : alt].filter((s) => s !== null).join(', ') || 'no names';
}

/**
 * A TLS failure as one line for logs, or null when the error is not about TLS (a reset, a refused
 * connection). The hints name what usually causes each.
 */
export function describeTlsError(err: NodeJS.ErrnoException): string | null {
  const code = err.code ?? '';
  // OpenSSL's "80AC...:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/..." says
  // "wrong version number"; the rest is where in OpenSSL.
  const openssl = /SSL routines:[^:]*:([^:]+)/.exec(err.message);
  const message = (openssl?.[1] ?? err.message).replace(/\s+/g, ' ').trim();
  if (code === 'CERT_HAS_EXPIRED') return 'TLS: the peer\'s certificate has expired';
  if (code === 'CERT_NOT_YET_VALID') return 'TLS: the peer\'s certificate is not valid yet';
  if (code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' || code === 'SELF_SIGNED_CERT_IN_CHAIN' || code === 'DEPTH_ZERO_SELF_SIGNED_CERT' || code === 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY' || code === 'CERT_SIGNATURE_FAILURE') {
    return `TLS: the peer's certificate is not signed by our CA (${code})`;
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `TLS: the peer's certificate does not name it (${message})`;
  if (code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_') || /alert|certificate|wrong version number|ssl|tls/i.test(message)) {
    const hint = /wrong version number|packet length too long|http request|unknown protocol/i.test(message) ? ' (does the peer speak TLS?)' : '';
    return `TLS: ${message}${hint}`;
  }
  return null;
}
