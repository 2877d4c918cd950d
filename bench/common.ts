// What every benchmark script shares: data files, the machine description, load average, number
// formatting, and waiting for a quiet machine. The benchmarks run on shared machines (other
// engineers' test runs): each table records the load average it was measured under.
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { topSelfTime } from './profile.js';
import { freePort, startBackground, type BackgroundProcess } from '../test/helpers/node-process.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Fill a file with incompressible data (a fixed seed is not needed: copies are made with cp). */
export function writeDataFile(filePath: string, sizeBytes: number): void {
  const chunk = Buffer.alloc(MiB);
  const fd = openSync(filePath, 'w');
  try {
    for (let off = 0; off < sizeBytes; off += chunk.length) {
      randomFillSync(chunk);
      writeSync(fd, chunk, 0, Math.min(chunk.length, sizeBytes - off), off);
    }
  } finally {
    closeSync(fd);
  }
}

/** cp a data file (same content on several targets: same data, same page cache behaviour). */
export function copyFile(from: string, to: string): void {
  execFileSync('cp', ['--sparse=never', from, to]);
}

export function syncFs(): void {
  execFileSync('sync');
}

export function loadAverage(): string {
  return os.loadavg().map((l) => l.toFixed(2)).join(' / ');
}

/**
 * Wait until the 1-minute load average is at most maxLoad, for at most maxWaitSec; returns what it
 * saw. A shared machine's neighbours hurt the single-threaded node more than nbdkit's 16 threads.
 */
export async function waitForLowLoad(maxLoad: number, maxWaitSec: number): Promise<string> {
  const deadline = Date.now() + maxWaitSec * 1000;
  while (os.loadavg()[0]! > maxLoad && Date.now() < deadline) {
    console.error(`load ${loadAverage()} > ${maxLoad}: waiting (up to ${Math.round((deadline - Date.now()) / 1000)} s more)`);
    await sleep(15_000);
  }
  const seen = loadAverage();
  if (os.loadavg()[0]! > maxLoad) console.error(`load still ${seen}; measuring anyway`);
  return seen;
}

export function machine(tools: Array<[string, string[]]> = [['fio', ['--version']], ['nbdkit', ['--version']]]): Record<string, string> {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? 'unknown';
  const version = (cmd: string, args: string[]): string => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8' }).split('\n')[0]!.trim();
    } catch {
      return 'unknown';
    }
  };
  const out: Record<string, string> = {
    cpus: `${os.availableParallelism()} × ${model}`,
    ram: `${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB`,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
  };
  for (const [cmd, args] of tools) out[cmd] = version(cmd, args);
  return out;
}

/**
 * The commit the bench ran on, and the files under src/ that differed from it (others edit src/
 * in the same tree: the numbers are for what was built, not necessarily for the commit alone).
 */
export function commitDescription(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const changed = execFileSync('git', ['status', '--porcelain', '--untracked-files=no', '--', 'src'], { encoding: 'utf8' })
      .split('\n').map((l) => l.slice(3).trim()).filter((l) => l !== '');
    return changed.length === 0 ? `${head}, src/ as committed` : `${head} + uncommitted changes to ${changed.join(', ')}`;
  } catch {
    return 'unknown';
  }
}

export function fmtNumber(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : 'n/a';
}

export function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Print the top self-time functions of every .cpuprofile in dir (written by node --cpu-prof). */
export function printProfiles(profileDir: string, label: (file: string) => string = (f) => f): void {
  const files = readdirSync(profileDir).filter((f) => f.endsWith('.cpuprofile'));
  for (const f of files) {
    console.log(`\nTop self time in ${label(f)} (${path.join(profileDir, f)}):`);
    for (const s of topSelfTime(path.join(profileDir, f))) {
      console.log(`${(s.share * 100).toFixed(1).padStart(5)}%  ${s.selfMs.toFixed(0).padStart(7)} ms  ${s.name}`);
    }
  }
  if (files.length === 0) console.log('\nno .cpuprofile written (did the node exit cleanly?)');
}

// ---- command-line options shared by the bench scripts ------------------------------------------

/** A bad command-line option: the scripts print its message alone, not a stack. */
export class OptionError extends Error {
  override readonly name = 'OptionError';
}

/** The line a script prints when it fails: the message for bad options, the stack otherwise. */
export function failureLine(script: string, err: unknown): string {
  const e = err as Error;
  return `${script}: ${e instanceof OptionError ? e.message : e.stack ?? e.message}`;
}

/** --help: print the usage and exit. */
export function exitWithUsageIf(help: boolean | undefined, usage: string): void {
  if (help !== true) return;
  console.log(usage);
  process.exit(0);
}

/** An integer option: `fallback` when absent, else at least `min`, or a one-line error. */
export function intOption(value: string | undefined, fallback: number, name: string, min = 1): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new OptionError(`--${name} wants an integer ≥ ${min}, got "${value}"`);
  return n;
}

/** --max-load: null when absent, else a positive number. */
export function maxLoadOption(value: string | undefined): number | null {
  if (value === undefined) return null;
  const maxLoad = Number(value);
  if (!(maxLoad > 0)) throw new OptionError(`--max-load wants a positive number, got "${value}"`);
  return maxLoad;
}

/**
 * `nbdkit file FILE` on a free loopback port, otherwise with its defaults (16 threads, the page
 * cache): the one-node reference every bench measures against, as people run it.
 */
export async function startNbdkitFile(file: string): Promise<{ proc: BackgroundProcess; port: number; uri: string }> {
  const port = await freePort();
  const proc = await startBackground('nbdkit', ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port), 'file', file], port);
  return { proc, port, uri: `nbd://127.0.0.1:${port}/` };
}
