import type { Logger } from 'pino';
import { signalReload, writePasswordFile, type PasswordEntry } from './password-file.js';
import type { FleetBroker } from './types.js';

export interface ExternalBrokerOptions {
  /** Where the fleet's own client connects, e.g. mqtt://127.0.0.1:1884 (the fleet listener of outpost.conf). */
  url: string;
  username: string;
  password: string;
  /** The device listener's password_file; syncDevices rewrites it. Without it, device auth is managed elsewhere. */
  passwordFile?: string;
  /** Mosquitto's pid_file; SIGHUP to that pid makes it reload password and ACL files. */
  pidFile?: string;
  /** `$7$` hash of the fleet user's password, added to passwordFile for single-listener setups. */
  fleetPasswordHash?: string;
  /** Mode of the password file; default 0o600 (see password-file.ts about Mosquitto's user). */
  passwordFileMode?: number;
  log: Logger;
}

/**
 * An external Mosquitto (or another broker) run by the operator (DESIGN §4). The fleet is just a client there;
 * this object only keeps the broker's device credentials in step with the fleet's device table.
 */
export function externalBroker(opts: ExternalBrokerOptions): FleetBroker {
  const log = opts.log.child({ component: 'broker', broker: 'external' });
  let current: PasswordEntry[] | undefined; // undefined until the first syncDevices: nothing safe to rewrite yet
  let queue: Promise<void> = Promise.resolve();

  async function install(entries: PasswordEntry[]): Promise<void> {
    if (opts.passwordFile === undefined) {
      log.debug('no passwordFile configured; device credentials are managed outside the fleet server');
      return;
    }
    const all = opts.fleetPasswordHash === undefined ? entries : [...entries, { username: opts.username, secretHash: opts.fleetPasswordHash }];
    await writePasswordFile(opts.passwordFile, all, opts.passwordFileMode);
    if (opts.pidFile === undefined) {
      log.warn({ passwordFile: opts.passwordFile }, 'password file rewritten but no pidFile configured: Mosquitto reloads it only on SIGHUP');
      return;
    }
    const pid = await signalReload(opts.pidFile);
    if (pid === undefined) log.warn({ pidFile: opts.pidFile }, 'password file rewritten but Mosquitto could not be signalled (no pid file or no such process)');
    else log.info({ pid, users: all.length }, 'Mosquitto password file rewritten and reloaded');
  }

  // One rewrite at a time, in call order; a failed one does not block the next.
  function enqueue(entries: PasswordEntry[]): Promise<void> {
    const run = queue.then(() => install(entries));
    queue = run.catch(() => undefined);
    return run;
  }

  return {
    internalUrl: opts.url,
    internalCredentials: { username: opts.username, password: opts.password },
    syncDevices(entries) {
      current = entries.map((e) => ({ username: e.deviceId, secretHash: e.secretHash }));
      return enqueue(current);
    },
    async disconnect(deviceId) {
      // Mosquitto 2 re-checks connected clients against the reloaded password file and drops those whose
      // user is gone or whose password no longer matches (fleet-broker-mosquitto.test.ts shows it), so
      // dropping the line and reloading kicks the device. A later syncDevices puts a re-enrolled device back.
      if (current === undefined) {
        log.warn({ deviceId }, 'cannot disconnect from an external broker before the first syncDevices');
        return;
      }
      current = current.filter((e) => e.username !== deviceId);
      await enqueue(current);
    },
    connectedCount: () => Number.NaN,
    async close() {
      await queue;
    },
  };
}
