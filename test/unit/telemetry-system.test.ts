import { describe, expect, it } from 'vitest';
import { SystemPointSchema } from '../../shared/src/mqtt/messages.js';
import { validateSchedule } from '../../agent/src/telemetry/schedule.js';
import { createSystemSampler, diskOf, type SystemInfoSource } from '../../agent/src/telemetry/system.js';

/** A systeminformation stand-in with fixed answers; `calls` counts each function's use. */
function source(over: Partial<Record<keyof SystemInfoSource, () => Promise<unknown>>> = {}): { src: SystemInfoSource; calls: Record<string, number> } {
  const calls: Record<string, number> = {};
  const counted = (name: keyof SystemInfoSource, fallback: () => Promise<unknown>) => () => {
    calls[name] = (calls[name] ?? 0) + 1;
    return (over[name] ?? fallback)();
  };
  const src = {
    currentLoad: counted('currentLoad', async () => ({ currentLoad: 37.26 })),
    mem: counted('mem', async () => ({ total: 8_000, available: 3_000 })),
    cpuTemperature: counted('cpuTemperature', async () => ({ main: 51.04 })),
    fsSize: counted('fsSize', async () => [
      { fs: '/dev/vda', mount: '/', size: 1000, used: 100 },
      { fs: '/dev/vdb', mount: '/var/lib/outpost', size: 500, used: 250 },
      { fs: '/dev/vdc', mount: '/var/lib/outpost-old', size: 9, used: 9 },
    ]),
    graphics: counted('graphics', async () => ({ controllers: [], displays: [] })),
  } as unknown as SystemInfoSource;
  return { src, calls };
}

describe('system telemetry sampler', () => {
  it('reports CPU, memory, temperature and the disk holding the data dir, as the message schema wants', async () => {
    const { src } = source();
    const p = await createSystemSampler({ dataDir: '/var/lib/outpost/data', source: src })();
    expect(p).toEqual({ cpuPercent: 37.3, memUsedBytes: 5_000, memTotalBytes: 8_000, temperatureC: 51, diskUsedBytes: 250, diskTotalBytes: 500, gpus: [] });
    expect(SystemPointSchema.safeParse(p).success).toBe(true);
  });

  it('reports null for what the box cannot tell, and for a call that hangs past the timeout', async () => {
    const { src } = source({
      currentLoad: () => new Promise(() => undefined),
      cpuTemperature: async () => ({ main: null }),
      mem: async () => {
        throw new Error('no /proc');
      },
    });
    const started = Date.now();
    const p = await createSystemSampler({ dataDir: '/srv', source: src, timeoutMs: 50 })();
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(p).toMatchObject({ cpuPercent: null, memUsedBytes: null, memTotalBytes: null, temperatureC: null, diskTotalBytes: 1000 });
    expect(SystemPointSchema.safeParse(p).success).toBe(true);
  });

  it('reports GPUs where the driver gives numbers, and stops spawning the GPU probe on a box without one', async () => {
    const gpu = source({ graphics: async () => ({ controllers: [{ model: 'Orin', utilizationGpu: 42, memoryUsed: 512, temperatureGpu: 61 }, { model: 'VGA', vram: 16 }] }) });
    const sample = createSystemSampler({ dataDir: '/', source: gpu.src });
    expect((await sample()).gpus).toEqual([{ model: 'Orin', utilizationPercent: 42, memoryUsedBytes: 512 * 1024 * 1024, temperatureC: 61 }]);
    await sample();
    expect(gpu.calls.graphics).toBe(2);

    const none = source();
    const sampleNone = createSystemSampler({ dataDir: '/', source: none.src });
    await sampleNone();
    await sampleNone();
    expect(none.calls.graphics).toBe(1);
  });

  it('picks the filesystem by the longest mount point that contains the directory', () => {
    const disks = [{ mount: '/', size: 1, used: 1 }, { mount: '/data', size: 2, used: 2 }, { mount: '/data2', size: 3, used: 3 }];
    expect(diskOf('/data/agent', disks)?.size).toBe(2);
    expect(diskOf('/data2', disks)?.size).toBe(3);
    expect(diskOf('/database', disks)?.size).toBe(1);
  });
});

describe('telemetry schedule', () => {
  it('accepts node-cron expressions with or without seconds', () => {
    expect(() => validateSchedule('*/10 * * * * *')).not.toThrow();
    expect(() => validateSchedule('*/5 * * * *')).not.toThrow();
  });

  it('refuses an invalid expression with a message naming the setting and an example', () => {
    expect(() => validateSchedule('every 10 seconds')).toThrow(/telemetry\.schedule: "every 10 seconds" is not a valid cron expression .*\*\/10 \* \* \* \* \*/);
    expect(() => validateSchedule('61 * * * * *')).toThrow(/telemetry\.schedule/);
  });
});
