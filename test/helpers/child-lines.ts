import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface RunningChild {
  child: ChildProcess;
  /** Every JSON line printed so far, in order. */
  facts: Record<string, unknown>[];
  stderr: string[];
  /** Resolves when `check(facts)` holds (checked on every line), or rejects after `timeoutMs` or on exit. */
  until(check: (facts: Record<string, unknown>[]) => boolean, what: string, timeoutMs?: number): Promise<void>;
  /** Resolves with the exit code / signal once the process has exited and its output has been read. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns `command` and collects its stdout as JSON lines (see test/helpers/outbox-child.ts). */
export function spawnJsonLines(command: string, args: string[]): RunningChild {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const facts: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  const waiters = new Set<() => void>();
  let done = false;
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      facts.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      stderr.push(`(stdout) ${line}`);
    }
    for (const w of [...waiters]) w();
  });
  createInterface({ input: child.stderr! }).on('line', (line) => stderr.push(line));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    // 'close' comes after both pipes are drained, so every line the child wrote has been seen.
    child.on('close', (code, signal) => {
      done = true;
      for (const w of [...waiters]) w();
      resolve({ code, signal });
    });
  });
  return {
    child, facts, stderr, exited,
    until(check, what, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stderr: ${stderr.slice(-5).join(' | ')}`)), timeoutMs);
        const finish = (err?: Error) => {
          clearTimeout(timer);
          waiters.delete(probe);
          if (err) reject(err);
          else resolve();
        };
        const probe = () => {
          if (check(facts)) finish();
          else if (done) finish(new Error(`child exited before ${what}; stderr: ${stderr.slice(-5).join(' | ')}`));
        };
        waiters.add(probe);
        probe();
      });
    },
  };
}
