import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from './paths.js';

/** The Mosquitto configuration the project ships (outpost.conf + acl), tested as shipped. */
export const SHIPPED_MOSQUITTO_CONF = path.join(REPO_ROOT, 'fleet-server/mosquitto');

/**
 * Writes the shipped outpost.conf and acl into `dir` with only what a test must change: its ports, its files
 * in `dir`, logging to stderr, and `user root` when run as root (Mosquitto would drop to a user that cannot
 * read 0600 temp files). `defaults: true` removes the two queue settings, to show Mosquitto's silent drops.
 * Fails loudly if the shipped file no longer has a line it rewrites. Returns the config file's path.
 */
export function writeMosquittoConfig(dir: string, ports: { device: number; fleet: number }, opts: { defaults?: boolean } = {}): string {
  let conf = readFileSync(path.join(SHIPPED_MOSQUITTO_CONF, 'outpost.conf'), 'utf8');
  const rewrite = (from: string | RegExp, to: string): void => {
    const next = conf.replace(from, to);
    if (next === conf) throw new Error(`shipped outpost.conf has no ${String(from)}: update test/helpers/mosquitto-config.ts with the config`);
    conf = next;
  };
  rewrite(/^pid_file .*$/m, `pid_file ${dir}/mosquitto.pid`);
  rewrite(/^persistence_location .*$/m, `persistence_location ${dir}/`);
  rewrite(/^log_dest syslog$/m, 'log_dest stderr');
  rewrite(/^listener 1883 127\.0\.0\.1$/m, `listener ${ports.device} 127.0.0.1`);
  rewrite(/^listener 1884 127\.0\.0\.1$/m, `listener ${ports.fleet} 127.0.0.1`);
  conf = conf.replaceAll('/etc/mosquitto/outpost/', `${dir}/`);
  if (opts.defaults) {
    rewrite(/^max_queued_messages 0$/m, '');
    rewrite(/^max_inflight_messages 0$/m, '');
  }
  if (process.getuid?.() === 0) conf += '\nuser root\n';
  const file = path.join(dir, 'outpost.conf');
  writeFileSync(file, conf);
  copyFileSync(path.join(SHIPPED_MOSQUITTO_CONF, 'acl'), path.join(dir, 'acl'));
  return file;
}
