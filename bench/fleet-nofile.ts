import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync } from 'node:fs';

/**
 * Open-file limits (RLIMIT_NOFILE) for the fleet bench. 1,000 MQTT connections need 1,000 descriptors in the
 * load process and as many in the broker; the common soft default of 1024 stops at about 1,015 clients
 * (research §2.3, eclipse-mosquitto #2674). Node cannot call setrlimit, so children are started through
 * `bash -c 'ulimit -Sn N; exec …'` (the exec keeps the pid, so signals and /proc/<pid> reach the real process),
 * and every process's actual limit is read back from /proc/<pid>/limits.
 */

/** Soft limit the bench asks for: 1,000 devices plus the fleet's HTTP, SQLite and pipe descriptors, with room. */
export const NOFILE_WANTED = 8192;

export interface NofileLimit {
  soft: number;
  hard: number;
}

/** "Max open files  1024  4096  files" from /proc/<pid>/limits; `unlimited` reads as Infinity. */
export function nofileOf(pid: number | 'self'): NofileLimit | undefined {
  try {
    const line = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'latin1'));
    if (!line) return undefined;
    const value = (s: string) => (s === 'unlimited' ? Number.POSITIVE_INFINITY : Number(s));
    return { soft: value(line[1]!), hard: value(line[2]!) };
  } catch {
    return undefined;
  }
}

/**
 * Spawns `command args…` with its soft open-file limit raised to at least `nofile` (or to the hard limit when
 * that is lower). A limit already above `nofile` is left alone.
 */
export function spawnWithNofile(command: string, args: string[], nofile: number, options: SpawnOptions): ChildProcess {
  const script =
    `s=$(ulimit -Sn); if [ "$s" != unlimited ] && [ "$s" -lt ${nofile} ]; then ` +
    `ulimit -Sn ${nofile} 2>/dev/null || ulimit -Sn "$(ulimit -Hn)"; fi; exec "$@"`;
  return spawn('bash', ['-c', script, 'bash', command, ...args], options);
}

/** A one-line description for logs and the report. */
export function describeNofile(limit: NofileLimit | undefined): string {
  if (!limit) return 'unknown';
  const v = (n: number) => (Number.isFinite(n) ? String(n) : 'unlimited');
  return `soft ${v(limit.soft)}, hard ${v(limit.hard)}`;
}
