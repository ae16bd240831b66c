import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import sharp from 'sharp';

/** Step 0 of the bench: what machine and software the numbers belong to. */
export interface Environment {
  cpuModel: string;
  /** Cores this process may use (os.availableParallelism, as `nproc`). */
  nproc: number;
  logicalCpus: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  onnxruntimeNode: string;
  sharp: string;
  libvips: string;
  /** libvips threads per sharp operation (sharp.concurrency()). */
  sharpConcurrency: number;
  /** libuv thread pool (sharp work, fs) for the agent and the bare worker. */
  uvThreadpoolSize: string;
  autocannonInstalled: string | undefined;
  loadAverageAtStart: [number, number, number];
  loadWarning: string | undefined;
}

/** The research note (§2.2) asks for an idle machine; above this 1-minute load the numbers are suspect. */
export const MAX_IDLE_LOAD = 0.5;

export function captureEnvironment(): Environment {
  const require = createRequire(import.meta.url);
  const version = (pkg: string): string | undefined => {
    try {
      return (require(`${pkg}/package.json`) as { version: string }).version;
    } catch {
      return undefined;
    }
  };
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  try {
    cpuModel = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpuModel;
  } catch {
    /* not Linux */
  }
  const load = os.loadavg() as [number, number, number];
  return {
    cpuModel,
    nproc: os.availableParallelism(),
    logicalCpus: os.cpus().length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    onnxruntimeNode: version('onnxruntime-node') ?? 'unknown',
    sharp: sharp.versions.sharp ?? version('sharp') ?? 'unknown',
    libvips: sharp.versions.vips,
    sharpConcurrency: sharp.concurrency(),
    uvThreadpoolSize: process.env.UV_THREADPOOL_SIZE ?? '4 (default)',
    autocannonInstalled: version('autocannon'),
    loadAverageAtStart: load.map((v) => Math.round(v * 100) / 100) as [number, number, number],
    loadWarning: load[0] > MAX_IDLE_LOAD ? `1-minute load average is ${load[0].toFixed(2)} (> ${MAX_IDLE_LOAD}) at start: other work shares the CPU, numbers will be noisy` : undefined,
  };
}
