// CPU accounting for the benchmarks: how much CPU each target's server processes, fio and the
// whole machine used during one fio run. On this 2-vCPU machine fio, nbdkit or both twinblock
// nodes share the same two cores, so a throughput ratio means little without the CPU each side
// spent per I/O: it tells whether a row was CPU-bound and what a target would cost in cores.
// Linux only (/proc).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let ticksPerSec: number | null = null;

/** Clock ticks per second (the unit of cpuTicksOf). */
export function clockTicksPerSec(): number {
  ticksPerSec ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  return ticksPerSec;
}

/** User + system CPU clock ticks in a /proc stat file: a process's (all its threads) or one thread's. */
export function cpuTicksOf(statPath: string): number {
  const stat = readFileSync(statPath, 'utf8');
  // Fields after the command name, which may hold spaces: "(name) S ppid ..." — utime is field 14.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** User + system CPU seconds of a process so far, all its threads (/proc/PID/stat utime + stime). */
function processCpuSec(pid: number): number {
  return cpuTicksOf(`/proc/${pid}/stat`) / clockTicksPerSec();
}

/** Peak resident set size of a process so far, in bytes (/proc/PID/status VmHWM). */
export function peakRssBytes(pid: number): number {
  const kib = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  if (kib === undefined) throw new Error(`no VmHWM in /proc/${pid}/status`);
  return Number(kib) * 1024;
}

/** Busy CPU seconds of the whole machine so far (every state but idle and iowait, /proc/stat). */
function machineBusySec(): number {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = cpu as [number, number, number, number, number, number, number, number];
  return (user + nice + system + irq + softirq + steal) / clockTicksPerSec();
}

/** Cores in use over a span: by the target's server processes, and by the whole machine. */
export interface CpuUse {
  serverCores: number;
  machineCores: number;
}

/** Runs f and measures the CPU the given processes and the machine used meanwhile. */
export async function withCpuUse<T>(pids: number[], f: () => Promise<T>): Promise<[T, CpuUse]> {
  const serverBefore = pids.reduce((s, p) => s + processCpuSec(p), 0);
  const machineBefore = machineBusySec();
  const startedMs = Date.now();
  const result = await f();
  const wallSec = (Date.now() - startedMs) / 1000;
  const serverAfter = pids.reduce((s, p) => s + processCpuSec(p), 0);
  return [result, { serverCores: (serverAfter - serverBefore) / wallSec, machineCores: (machineBusySec() - machineBefore) / wallSec }];
}
