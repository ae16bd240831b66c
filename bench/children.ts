import { fork, type ChildProcess } from 'node:child_process';

/**
 * Every process the bench starts is registered here and killed when the bench ends, however it ends:
 * normal exit, an error, SIGINT/SIGTERM. (A SIGKILL of the bench itself cannot be caught; the forked
 * children then exit on their IPC 'disconnect', the agent would have to be stopped by hand.)
 */
const live = new Set<ChildProcess>();
const cleanups: (() => void)[] = [];

export function track<T extends ChildProcess>(child: T): T {
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

export function killAll(): void {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
  live.clear();
}

/** Runs at exit after the children are killed (synchronous work only, e.g. removing a temp dir). */
export function onCleanup(fn: () => void): void {
  cleanups.push(fn);
}

let installed = false;
export function installCleanup(): void {
  if (installed) return;
  installed = true;
  process.on('exit', () => {
    killAll();
    for (const fn of cleanups.splice(0)) {
      try {
        fn();
      } catch {
        /* best effort */
      }
    }
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      process.stderr.write(`\nbench: ${signal}, stopping every child process\n`);
      process.exit(signal === 'SIGINT' ? 130 : 143);
    });
  }
  process.on('uncaughtException', (err) => {
    process.stderr.write(`bench: ${err.stack ?? String(err)}\n`);
    process.exit(1);
  });
  process.on('unhandledRejection', (err) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}

/** Forks a compiled bench module with IPC, without the parent's --inspect or loader flags. */
export function forkChild(modulePath: string, env: NodeJS.ProcessEnv = process.env): ChildProcess {
  return track(fork(modulePath, [], { execArgv: [], env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
}

/** Sends one message and resolves with the child's next message; rejects if it exits or answers an error first. */
export function ask<T>(child: ChildProcess, message: unknown): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onMessage = (reply: unknown) => {
      off();
      const r = reply as { type?: string; message?: string };
      if (r.type === 'error') reject(new Error(`child ${child.pid}: ${r.message}`));
      else resolve(reply as T);
    };
    const onExit = (code: number | null, signal: string | null) => {
      off();
      reject(new Error(`child ${child.pid} exited (${signal ?? code}) before answering`));
    };
    const off = () => {
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.on('exit', onExit);
    child.send(message as object);
  });
}
