// Tests that drive real clients we did not write (qemu-io, nbdinfo, nbdcopy, fio, nbdkit) need
// Debian packages. When a tool is missing we install its package (we run as root in CI), after an
// `apt-get update`; if that is impossible we fail with a message naming the packages. We never
// skip silently: a skipped interop test would let a broken server look green.
import { execFileSync, spawnSync } from 'node:child_process';

/** Which Debian package provides each command our tests run. */
const packageOfTool: Record<string, string> = {
  'qemu-io': 'qemu-utils',
  'qemu-img': 'qemu-utils',
  'qemu-nbd': 'qemu-utils',
  nbdinfo: 'libnbd-bin',
  nbdcopy: 'libnbd-bin',
  nbdsh: 'python3-libnbd',
  fio: 'fio',
  nbdkit: 'nbdkit',
  'qemu-storage-daemon': 'qemu-system-common',
  etcd: 'etcd-server',
  chromium: 'chromium',
};

function hasTool(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
}

let aptUpdated = false;

/** Make sure every tool is on PATH, installing missing Debian packages; throws naming them if not. */
export function ensureTools(tools: string[]): void {
  const missing = tools.filter((t) => !hasTool(t));
  if (missing.length === 0) return;
  const packages = [...new Set(missing.map((t) => packageOfTool[t] ?? t))];
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!isRoot) {
    throw new Error(`missing ${missing.join(', ')}: install Debian packages ${packages.join(' ')} (apt-get install ${packages.join(' ')})`);
  }
  try {
    if (!aptUpdated) {
      execFileSync('apt-get', ['update', '-qq'], { stdio: 'ignore', timeout: 300_000 });
      aptUpdated = true;
    }
    execFileSync('apt-get', ['install', '-y', '-qq', ...packages], {
      stdio: 'ignore', timeout: 600_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  } catch (err) {
    throw new Error(`could not install Debian packages ${packages.join(' ')} for ${missing.join(', ')}: ${(err as Error).message}`);
  }
  const still = tools.filter((t) => !hasTool(t));
  if (still.length > 0) throw new Error(`still missing after installing ${packages.join(' ')}: ${still.join(', ')}`);
}
