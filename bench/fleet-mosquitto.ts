import { execFileSync, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { writePasswordFile } from '../fleet-server/src/broker/password-file.js';
import { FLEET_USERNAME } from '../fleet-server/src/broker/types.js';
import { hashSecret, newSecret } from '../fleet-server/src/devices/secret-hash.js';
import { freePort, tail } from './agent-process.js';
import { track } from './children.js';
import { nofileOf, spawnWithNofile, type NofileLimit } from './fleet-nofile.js';

export const MOSQUITTO = '/usr/sbin/mosquitto';

/**
 * Debian's Mosquitto started from the SHIPPED fleet-server/mosquitto/outpost.conf and acl, copied into a temp
 * dir with only what a temp install must change rewritten (pid file, persistence dir, log to a file, the two
 * listeners' ports, the /etc paths), as test/integration/fleet-broker-mosquitto.test.ts does. So the queue
 * settings (max_queued_messages 0, max_inflight_messages 0) and the ACL under load are the ones operators get.
 */
export interface MosquittoProcess {
  child: ChildProcess;
  pid: number;
  version: string;
  /** Device listener (use_username_as_clientid, devices.passwd). */
  deviceUrl: string;
  /** Fleet listener (fleet.passwd with the outpost-fleet user). */
  fleetUrl: string;
  fleetUsername: string;
  fleetPassword: string;
  passwordFile: string;
  pidFile: string;
  configFile: string;
  logFile: string;
  nofile: NofileLimit | undefined;
  stop(): Promise<{ exitCode: number | null; signal: string | null }>;
}

export function mosquittoVersion(): string | undefined {
  if (!existsSync(MOSQUITTO)) return undefined;
  try {
    execFileSync(MOSQUITTO, ['-h'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    // `mosquitto -h` prints its usage and exits 3.
    const out = `${(err as { stdout?: string }).stdout ?? ''}${(err as { stderr?: string }).stderr ?? ''}`;
    return /mosquitto version (\S+)/.exec(out)?.[1];
  }
  return undefined;
}

export async function startMosquitto(opts: { dir: string; shippedDir: string; nofile: number; startTimeoutMs: number }): Promise<MosquittoProcess> {
  const { dir } = opts;
  mkdirSync(dir, { recursive: true });
  const ports = { device: await freePort(), fleet: await freePort() };
  let conf = readFileSync(path.join(opts.shippedDir, 'outpost.conf'), 'utf8');
  const rewrite = (from: RegExp, to: string): void => {
    const next = conf.replace(from, to);
    if (next === conf) throw new Error(`shipped outpost.conf has no ${String(from)}: update bench/fleet-mosquitto.ts with the config`);
    conf = next;
  };
  const pidFile = path.join(dir, 'mosquitto.pid');
  rewrite(/^pid_file .*$/m, `pid_file ${pidFile}`);
  rewrite(/^persistence_location .*$/m, `persistence_location ${dir}/`);
  rewrite(/^log_dest syslog$/m, 'log_dest stderr');
  rewrite(/^listener 1883 127\.0\.0\.1$/m, `listener ${ports.device} 127.0.0.1`);
  rewrite(/^listener 1884 127\.0\.0\.1$/m, `listener ${ports.fleet} 127.0.0.1`);
  conf = conf.replaceAll('/etc/mosquitto/outpost/', `${dir}/`);
  // As root Mosquitto drops to the `mosquitto` user, which cannot read the fleet's 0600 password file here.
  if (process.getuid?.() === 0) conf += '\nuser root\n';
  const configFile = path.join(dir, 'outpost.conf');
  writeFileSync(configFile, conf);
  copyFileSync(path.join(opts.shippedDir, 'acl'), path.join(dir, 'acl'));
  const passwordFile = path.join(dir, 'devices.passwd');
  await writePasswordFile(passwordFile, []);
  const fleetPassword = newSecret();
  await writePasswordFile(path.join(dir, 'fleet.passwd'), [{ username: FLEET_USERNAME, secretHash: hashSecret(fleetPassword) }]);

  const logFile = path.join(dir, 'mosquitto.log');
  const fd = openSync(logFile, 'a');
  const child = track(spawnWithNofile(MOSQUITTO, ['-c', configFile], opts.nofile, { stdio: ['ignore', fd, fd] }));
  closeSync(fd);
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), resolve())));
  for (const port of [ports.device, ports.fleet]) {
    const deadline = performance.now() + opts.startTimeoutMs;
    while (!(await canConnect(port))) {
      if (exited || performance.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`mosquitto did not listen on ${port}; log ${logFile}:\n${tail(logFile)}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  // The fleet SIGHUPs the pid in this file after each password-file rewrite; the bench knows the pid anyway.
  if (!existsSync(pidFile)) writeFileSync(pidFile, `${child.pid}\n`);
  return {
    child, pid: child.pid!, version: mosquittoVersion() ?? 'unknown',
    deviceUrl: `mqtt://127.0.0.1:${ports.device}`, fleetUrl: `mqtt://127.0.0.1:${ports.fleet}`,
    fleetUsername: FLEET_USERNAME, fleetPassword, passwordFile, pidFile, configFile, logFile, nofile: nofileOf(child.pid!),
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exit;
        clearTimeout(timer);
      }
      return { exitCode: child.exitCode, signal: child.signalCode };
    },
  };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}
