import { readFileSync } from 'node:fs';

/**
 * CPU accounting from /proc, read at window boundaries (a few µs per read): the whole machine, one watched
 * process (the agent) and the reading process itself. Linux only; elsewhere every field is undefined.
 */
export interface CpuSnapshot {
  atMs: number;
  /** Jiffies of the whole machine: busy and total. */
  systemBusy: number | undefined;
  systemTotal: number | undefined;
  /** utime + stime of the watched process, jiffies. */
  watched: number | undefined;
  /** This process, µs (process.cpuUsage). */
  selfMicros: number;
}

export interface CpuUsage {
  /** Machine busy share over the interval, 0–100 % of all cores. */
  systemBusyPct: number | undefined;
  /** Watched process, % of ONE core (200 % = two cores busy). */
  watchedPct: number | undefined;
  /** This process, % of one core. */
  selfPct: number;
}

/** USER_HZ: 100 on every Linux architecture Node runs on (sysconf(_SC_CLK_TCK)). */
const JIFFIES_PER_SECOND = 100;

export function cpuSnapshot(watchedPid?: number): CpuSnapshot {
  const usage = process.cpuUsage();
  let systemBusy: number | undefined;
  let systemTotal: number | undefined;
  let watched: number | undefined;
  try {
    const line = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0]!;
    // cpu user nice system idle iowait irq softirq steal (guest columns are already inside user/nice).
    const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
    systemTotal = v.reduce((a, b) => a + b, 0);
    systemBusy = systemTotal - v[3]! - v[4]!;
  } catch {
    /* not Linux */
  }
  if (watchedPid !== undefined) watched = processJiffies(watchedPid);
  return { atMs: performance.now(), systemBusy, systemTotal, watched, selfMicros: usage.user + usage.system };
}

export function processJiffies(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Fields after the command name, which is in parentheses and may itself contain spaces.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]);
  } catch {
    return undefined;
  }
}

export function cpuBetween(a: CpuSnapshot, b: CpuSnapshot): CpuUsage {
  const seconds = (b.atMs - a.atMs) / 1000;
  const pct = (x: number | undefined, y: number | undefined) => (x === undefined || y === undefined || seconds <= 0 ? undefined : ((y - x) / JIFFIES_PER_SECOND / seconds) * 100);
  const dt = a.systemTotal !== undefined && b.systemTotal !== undefined ? b.systemTotal - a.systemTotal : undefined;
  return {
    systemBusyPct: dt && a.systemBusy !== undefined && b.systemBusy !== undefined ? ((b.systemBusy - a.systemBusy) / dt) * 100 : undefined,
    watchedPct: pct(a.watched, b.watched),
    selfPct: seconds > 0 ? ((b.selfMicros - a.selfMicros) / 1e6 / seconds) * 100 : 0,
  };
}

/** VmRSS and VmHWM (peak RSS) of a process in MiB, from /proc/<pid>/status. */
export function memoryOf(pid: number): { rssMiB: number; peakRssMiB: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'latin1');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]);
    return { rssMiB: kb('VmRSS') / 1024, peakRssMiB: kb('VmHWM') / 1024 };
  } catch {
    return undefined;
  }
}
