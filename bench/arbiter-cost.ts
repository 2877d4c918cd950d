// `npm run bench:arbiter-cost`: what the etcd arbiter costs the write path (issue 13; its ack gate
// is checked for every reply). Two pairs in one run, one without an arbiter and one with a real
// etcd as its arbiter; 4 KiB random writes at QD32, alternating runs; IOPS and CPU per write of
// both nodes (all threads), medians.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { EtcdCluster } from '../test/helpers/etcd.js';
import { cleanupAll, makeTempDir } from '../test/helpers/node-process.js';
import { ensureTools } from '../test/helpers/tools.js';
import { commitDescription, exitWithUsageIf, failureLine, fmtNumber, intOption, loadAverage, median, MiB, syncFs } from './common.js';
import { withCpuUse } from './cpu.js';
import { rows, runFio } from './fio.js';
import { BenchPair } from './pair.js';

const usage = 'usage: npm run bench:arbiter-cost -- [--runs N] [--runtime SEC] [--size SIZE_MIB]';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, runtime: { type: 'string' }, size: { type: 'string' }, help: { type: 'boolean' } } });
  exitWithUsageIf(values.help, usage);
  const runs = intOption(values.runs, 5, 'runs');
  const runtimeSec = intOption(values.runtime, 8, 'runtime');
  const sizeBytes = intOption(values.size, 256, 'size') * MiB;
  ensureTools(['fio']);
  const loadBefore = loadAverage();
  const dir = makeTempDir('twinblock-bench-arbiter-');
  const etcd = await EtcdCluster.start(1);
  const start = (name: string, extra: Record<string, unknown>): Promise<BenchPair> => BenchPair.start({
    dir: path.join(dir, name), stores: { a: path.join(dir, `${name}-a.img`), b: path.join(dir, `${name}-b.img`) }, size: `${sizeBytes / MiB}MiB`, cache: '256MiB', flush: 'memory', extra,
  });
  const plain = await start('plain', {});
  const arbitrated = await start('arbiter', { arbiter: { etcd: etcd.endpoints } });
  const row = rows.find((r) => r.id === 'randwrite-4k-qd32')!;
  const samples = { plain: [] as Array<{ iops: number; cpuUs: number }>, arbiter: [] as Array<{ iops: number; cpuUs: number }> };
  try {
    for (const v of [plain, arbitrated]) await v.waitInSync(300_000);
    const targets = [['plain', plain], ['arbiter', arbitrated]] as const;
    for (const [, v] of targets) await runFio(row, v.uri('a'), sizeBytes, 3); // warm-up: the caches' memory faulted in
    for (let i = 0; i < runs; i++) {
      for (const [name, v] of i % 2 === 0 ? targets : [...targets].reverse()) {
        await v.waitHardened(120_000);
        syncFs();
        const [m, cpu] = await withCpuUse(v.names.map((n) => v.node(n).pid), () => runFio(row, v.uri('a'), sizeBytes, runtimeSec));
        samples[name].push({ iops: m.iops, cpuUs: (cpu.serverCores * 1e6) / m.iops });
        console.error(`run ${i + 1}/${runs} ${name}: ${fmtNumber(m.iops)} IOPS, ${fmtNumber((cpu.serverCores * 1e6) / m.iops, 1)} µs CPU/write (load ${loadAverage()})`);
      }
    }
  } finally {
    await plain.stop();
    await arbitrated.stop();
    await etcd.stop();
  }
  const med = (name: 'plain' | 'arbiter', key: 'iops' | 'cpuUs'): number => median(samples[name].map((s) => s[key]));
  console.log([
    '| 4 KiB random write, QD32 | pair | pair with the etcd arbiter | ratio |',
    '| --- | --- | --- | --- |',
    `| IOPS (median of ${runs}) | ${fmtNumber(med('plain', 'iops'))} | ${fmtNumber(med('arbiter', 'iops'))} | ${(med('arbiter', 'iops') / med('plain', 'iops')).toFixed(2)}× |`,
    `| CPU per write, both nodes | ${fmtNumber(med('plain', 'cpuUs'), 1)} µs | ${fmtNumber(med('arbiter', 'cpuUs'), 1)} µs | ${(med('arbiter', 'cpuUs') / med('plain', 'cpuUs')).toFixed(2)}× |`,
    '',
    `- runs: ${samples.plain.map((s) => fmtNumber(s.iops)).join(' / ')} against ${samples.arbiter.map((s) => fmtNumber(s.iops)).join(' / ')} IOPS`,
    `- date: ${new Date().toISOString()} (commit ${commitDescription()}); load before ${loadBefore}, after ${loadAverage()}`,
    `- command: \`npm run bench:arbiter-cost -- ${process.argv.slice(2).join(' ')}\``,
  ].join('\n'));
  execFileSync('rm', ['-rf', dir]);
  await cleanupAll();
}

main().catch(async (err: unknown) => {
  console.error(failureLine('bench:arbiter-cost', err));
  await cleanupAll();
  process.exit(1);
});
