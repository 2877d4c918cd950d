// Certificates for the TLS tests (issue 14 item 9), made with openssl into a test's temp dir: a CA,
// node certificates that name the node (DNS:<node>) and the host (IP:127.0.0.1, DNS:localhost, as
// qemu and libnbd check the host they dial), and the bad ones a test needs: signed by another CA,
// expired, naming another node. File names follow libnbd's and qemu's tls-certificates directory
// (ca-cert.pem, server-cert.pem, ...) where a client reads them from a directory.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';

export interface CertFiles { cert: string; key: string; ca: string }

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A CA (ca.crt, ca.key) in dir/name. */
export function makeCa(dir: string, name = 'ca'): { dir: string; crt: string; key: string } {
  const at = path.join(dir, name);
  mkdirSync(at, { recursive: true });
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '30', '-subj', `/CN=twinblock test ${name}`], at);
  return { dir: at, crt: path.join(at, 'ca.crt'), key: path.join(at, 'ca.key') };
}

/**
 * A certificate for `name` signed by `ca`, valid `days` (negative: already expired), naming `names`
 * (default: the node, localhost and 127.0.0.1).
 */
export function makeCert(ca: { dir: string; crt: string; key: string }, name: string, opts: { days?: number; names?: string[]; file?: string } = {}): CertFiles {
  const file = opts.file ?? name;
  const names = opts.names ?? [`DNS:${name}`, 'DNS:localhost', 'IP:127.0.0.1'];
  const ext = path.join(ca.dir, `${file}.ext`);
  execFileSync('sh', ['-c', `printf 'subjectAltName=${names.join(',')}\\nextendedKeyUsage=serverAuth,clientAuth\\n' > '${ext}'`]);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${file}.key`, '-out', `${file}.csr`, '-subj', `/CN=${name}`], ca.dir);
  openssl(['x509', '-req', '-in', `${file}.csr`, '-CA', ca.crt, '-CAkey', ca.key, '-CAcreateserial', '-out', `${file}.crt`, '-days', String(opts.days ?? 30), '-extfile', ext], ca.dir);
  return { cert: path.join(ca.dir, `${file}.crt`), key: path.join(ca.dir, `${file}.key`), ca: ca.crt };
}

/** A directory as qemu's tls-creds-x509 (endpoint=client) and libnbd's tls-certificates read it. */
export function clientCertDir(dir: string, ca: string, client?: CertFiles): string {
  mkdirSync(dir, { recursive: true });
  copyFileSync(ca, path.join(dir, 'ca-cert.pem'));
  if (client !== undefined) {
    copyFileSync(client.cert, path.join(dir, 'client-cert.pem'));
    copyFileSync(client.key, path.join(dir, 'client-key.pem'));
  }
  return dir;
}
