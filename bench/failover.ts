// `npm run bench:failover` (issue 13 item 4): kill -9 of the primary → first write served by the
// new primary, with no person involved, through a real etcd and the default lease (2 s). A pair
// with the arbiter writes under load; the primary is killed; the time runs until a write to the
// survivor's NBD address is answered (the client connects as soon as the survivor's status says
// primary, polled every 10 ms). The killed node is started again, returns as secondary, and the
// next run kills the other one. Medians over --runs.
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { NbdClient } from '../src/nbd/client.js';
import { EtcdCluster } from '../test/helpers/etcd.js';
import { AckedWriter, BlockModel, FailoverPair, type NodeName } from '../test/helpers/failover-pair.js';
import { cleanupAll } from '../test/helpers/node-process.js';
import { commitDescription, exitWithUsageIf, failureLine, intOption, loadAverage, machine, median, MiB } from './common.js';

const usage = `usage: npm run bench:failover -- [--runs N] [--etcd-members 1|3] [--lease-ttl MS] [--markdown FILE]`;

interface Sample { killed: NodeName; leaderMs: number; firstWriteMs: number; ackedBefore: number }

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (performance.now() > deadline) throw new Error(`not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function oneFailover(pair: FailoverPair, primary: NodeName, overrides: Record<string, unknown>): Promise<Sample> {
  const survivor: NodeName = primary === 'a' ? 'b' : 'a';
  const model = new BlockModel(64 * MiB);
  const writer = (await AckedWriter.open(pair.uri(primary), model, { depth: 16, region: [0, 12 * MiB], maxBlocks: 4 })).start();
  await writer.waitAcks(1000);
  await pair.kill9(primary);
  const killedAt = performance.now();
  const stats = await writer.stop();
  let leaderMs = 0;
  await waitUntil(async () => {
    const s = await pair.status(survivor) as unknown as { role: string; arbiter: { leader: string | null } };
    if (leaderMs === 0 && s.arbiter.leader === survivor) leaderMs = performance.now() - killedAt;
    return s.role === 'primary';
  }, 30_000);
  const client = await NbdClient.connect(pair.uri(survivor));
  await client.write(0, Buffer.alloc(4096, 7));
  const firstWriteMs = performance.now() - killedAt;
  await client.disconnect();
  await pair.start(primary, { overrides });
  await pair.waitInSync(120_000);
  return { killed: primary, leaderMs, firstWriteMs, ackedBefore: stats.acked };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, 'etcd-members': { type: 'string' }, 'lease-ttl': { type: 'string' }, markdown: { type: 'string' }, help: { type: 'boolean' } } });
  exitWithUsageIf(values.help, usage);
  const runs = intOption(values.runs, 7, 'runs');
  const members = intOption(values['etcd-members'], 1, 'etcd-members');
  const leaseTtlMs = intOption(values['lease-ttl'], 2000, 'lease-ttl');
  const loadBefore = loadAverage();
  const etcd = await EtcdCluster.start(members);
  const overrides = { arbiter: { etcd: etcd.endpoints, leaseTtlMs } };
  // The default heartbeat timeout (1 s), as a user runs it.
  const pair = await FailoverPair.create({ start: false, heartbeatTimeoutMs: 1000 });
  const samples: Sample[] = [];
  try {
    await pair.start('b', { overrides });
    await pair.start('a', { overrides });
    await pair.waitInSync(60_000);
    let primary: NodeName = 'a';
    await waitUntil(async () => (await pair.status('a') as unknown as { arbiter: { leader: string | null } }).arbiter.leader === 'a', 30_000);
    for (let i = 0; i < runs; i++) {
      const s = await oneFailover(pair, primary, overrides);
      samples.push(s);
      console.error(`run ${i + 1}/${runs}: kill -9 ${s.killed} → leader key taken ${s.leaderMs.toFixed(0)} ms, first write served ${s.firstWriteMs.toFixed(0)} ms (${s.ackedBefore} writes acknowledged before)`);
      primary = primary === 'a' ? 'b' : 'a';
    }
  } finally {
    await pair.kill();
    await etcd.stop();
  }
  const md = [
    '| kill -9 of the primary → | median | runs (ms) | target |',
    '| --- | --- | --- | --- |',
    `| the survivor holds the leader key | ${median(samples.map((s) => s.leaderMs)).toFixed(0)} ms | ${samples.map((s) => s.leaderMs.toFixed(0)).join(' / ')} | |`,
    `| first write served by the new primary | ${median(samples.map((s) => s.firstWriteMs)).toFixed(0)} ms | ${samples.map((s) => s.firstWriteMs.toFixed(0)).join(' / ')} | ≤ 3,000 ms |`,
    '',
    `Pair on loopback, heartbeat timeout 1000 ms (the default), lease TTL ${leaseTtlMs} ms, ${members} etcd member${members === 1 ? '' : 's'} (${etcd.endpoints.length} started); the killed node alternates and returns as secondary before the next run.`,
    '',
    `- date: ${new Date().toISOString()} (commit ${commitDescription()})`,
    ...Object.entries(machine([['etcd', ['--version']]])).map(([k, v]) => `- ${k}: ${v}`),
    `- load average (1/5/15 min) before: ${loadBefore}; after: ${loadAverage()}`,
    `- command: \`npm run bench:failover -- ${process.argv.slice(2).join(' ')}\``,
  ].join('\n');
  console.log(md);
  if (values.markdown !== undefined) writeFileSync(values.markdown, `${md}\n`);
  await cleanupAll();
}

main().catch(async (err: unknown) => {
  console.error(failureLine('bench:failover', err));
  await cleanupAll();
  process.exit(1);
});
