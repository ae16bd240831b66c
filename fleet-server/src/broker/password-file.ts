import { randomBytes } from 'node:crypto';
import { open, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';

export interface PasswordEntry {
  username: string;
  /** Mosquitto `$7$` (PBKDF2-SHA512) hash, as devices/secret-hash.ts stores it; `$6$` (SHA512) is accepted too. */
  secretHash: string;
}

// A username must not carry the file's separators; a hash is `$7$iterations$salt$hash` in base64.
const USERNAME = /^[^:\s]{1,256}$/;
const HASH = /^\$[67]\$(\d+\$)?[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/;

/** The password_file text Mosquitto reads: one `username:hash` line each, sorted for stable diffs. */
export function formatPasswordFile(entries: readonly PasswordEntry[]): string {
  const lines = entries.map(({ username, secretHash }) => {
    if (!USERNAME.test(username)) throw new Error(`cannot write username ${JSON.stringify(username)} to a Mosquitto password file`);
    if (!HASH.test(secretHash)) throw new Error(`hash of ${username} is not a Mosquitto $7$/$6$ hash`);
    return `${username}:${secretHash}`;
  });
  lines.sort();
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

/**
 * Replaces `file` atomically: write a temp file beside it (same filesystem), fsync, rename over. Mosquitto
 * reloading on SIGHUP never sees a half-written file, and a crash leaves the old one. Mode 0600 by default:
 * the hashes are credentials. Mosquitto must be able to read it after dropping privileges, so either run
 * the fleet server as the broker's user or pass 0o640 with a shared group (fleet-server/mosquitto/README.md).
 */
export async function writePasswordFile(file: string, entries: readonly PasswordEntry[], mode = 0o600): Promise<void> {
  const text = formatPasswordFile(entries);
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(tmp, 'wx', mode);
  try {
    await handle.writeFile(text, 'utf8');
    await handle.chmod(mode); // open() mode is filtered by the umask
    await handle.sync();
  } catch (err) {
    await handle.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await handle.close();
  await rename(tmp, file);
  const dir = await open(path.dirname(file), 'r');
  try {
    await dir.sync(); // the rename itself survives a power cut
  } finally {
    await dir.close();
  }
}

/**
 * Sends SIGHUP to the pid in `pidFile` so Mosquitto reloads its password and ACL files. Returns the pid
 * signalled, or undefined when the file is missing or names no live process (best effort, logged by caller).
 */
export async function signalReload(pidFile: string, kill: (pid: number, signal: NodeJS.Signals) => void = (pid, signal) => process.kill(pid, signal)): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(pidFile, 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  try {
    kill(pid, 'SIGHUP');
    return pid;
  } catch {
    return undefined;
  }
}
