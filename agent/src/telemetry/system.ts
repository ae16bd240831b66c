import { realpathSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import si from 'systeminformation';
import type { SystemPoint } from '../../../shared/src/mqtt/messages.js';

/** Samples the box once; every field is null (or gpus empty) when the box cannot tell. Never rejects. */
export type SystemSampler = () => Promise<SystemPoint>;

/** The systeminformation calls the sampler uses (the real module by default). */
export type SystemInfoSource = Pick<typeof si, 'currentLoad' | 'mem' | 'cpuTemperature' | 'fsSize' | 'graphics'>;

export interface SystemSamplerOptions {
  /** The agent's data directory: disk usage is that of the filesystem holding it. */
  dataDir: string;
  /** Longest wait for each call, in ms: fsSize and graphics spawn processes (df, nvidia-smi) that can hang. */
  timeoutMs?: number;
  source?: SystemInfoSource;
  log?: Pick<Logger, 'debug' | 'warn'>;
}

const MIB = 1024 * 1024;

/**
 * System telemetry through systeminformation: CPU load, memory, CPU temperature, the data dir's disk, and
 * GPUs where the driver reports them (nvidia-smi). graphics() spawns several processes, so after a first
 * probe that finds no GPU reporting utilisation, memory or temperature, it is not called again.
 */
export function createSystemSampler(options: SystemSamplerOptions): SystemSampler {
  const source = options.source ?? si;
  const timeoutMs = options.timeoutMs ?? 3000;
  const dir = resolveDir(options.dataDir);
  let probeGpus = true;

  const settle = async <T>(what: string, fn: () => Promise<T>): Promise<T | undefined> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        fn(),
        new Promise<undefined>((resolve) => {
          timer = setTimeout(() => {
            options.log?.warn({ call: what, timeoutMs }, 'system telemetry call timed out; reported as null');
            resolve(undefined);
          }, timeoutMs);
        }),
      ]);
    } catch (err) {
      options.log?.debug({ call: what, err: (err as Error).message }, 'system telemetry call failed; reported as null');
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  };

  return async () => {
    const [load, mem, temp, disks, graphics] = await Promise.all([
      settle('currentLoad', () => source.currentLoad()),
      settle('mem', () => source.mem()),
      settle('cpuTemperature', () => source.cpuTemperature()),
      settle('fsSize', () => source.fsSize()),
      probeGpus ? settle('graphics', () => source.graphics()) : Promise.resolve(undefined),
    ]);
    const gpus = (graphics?.controllers ?? [])
      .filter((c) => c.utilizationGpu !== undefined || c.memoryUsed !== undefined || c.temperatureGpu !== undefined)
      .slice(0, 16)
      .map((c) => ({
        model: String(c.model ?? c.name ?? 'unknown').slice(0, 200),
        utilizationPercent: percent(c.utilizationGpu),
        memoryUsedBytes: bytes(c.memoryUsed === undefined ? undefined : c.memoryUsed * MIB),
        temperatureC: celsius(c.temperatureGpu),
      }));
    if (gpus.length === 0) probeGpus = false;
    const disk = disks ? diskOf(dir, disks) : undefined;
    return {
      cpuPercent: percent(load?.currentLoad),
      memUsedBytes: mem ? bytes(mem.total - mem.available) : null,
      memTotalBytes: bytes(mem?.total),
      temperatureC: celsius(temp?.main),
      diskUsedBytes: bytes(disk?.used),
      diskTotalBytes: bytes(disk?.size),
      gpus,
    };
  };
}

/** The filesystem whose mount point is the longest prefix of `dir`. */
export function diskOf(dir: string, disks: { mount: string; size: number; used: number }[]): { size: number; used: number } | undefined {
  let best: { mount: string; size: number; used: number } | undefined;
  for (const d of disks) {
    if (typeof d.mount !== 'string' || d.mount === '') continue;
    const inside = d.mount === '/' || dir === d.mount || dir.startsWith(d.mount.endsWith('/') ? d.mount : `${d.mount}/`);
    if (inside && (!best || d.mount.length > best.mount.length)) best = d;
  }
  return best;
}

function resolveDir(dir: string): string {
  try {
    return realpathSync(dir);
  } catch {
    return path.resolve(dir);
  }
}

function percent(v: number | null | undefined): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? Math.round(Math.min(100, Math.max(0, v)) * 10) / 10 : null;
}

function celsius(v: number | null | undefined): number | null {
  // systeminformation reports null, or sometimes -1 / 0, when there is no sensor.
  return typeof v === 'number' && Number.isFinite(v) && v > 0 && v <= 200 ? Math.round(v * 10) / 10 : null;
}

function bytes(v: number | null | undefined): number | null {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.round(v) : null;
}
