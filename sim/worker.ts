// Worker-thread entry for sim/batch.ts: runs the seed range it is given and posts the result.
import { parentPort, workerData } from 'node:worker_threads';
import { runBatch, type BatchSpec } from './batch.js';

void runBatch(workerData as BatchSpec).then((result) => parentPort?.postMessage(result));
