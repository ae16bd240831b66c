import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { DEVICE_ID_PATTERN } from '../../../shared/src/mqtt/topics.js';

/**
 * What enrollment gives a box: its identity on the fleet and where to connect. Stored in
 * `<dataDir>/fleet-credentials.json`, mode 0600 (the secret is the device's MQTT password).
 */
export const CREDENTIALS_FILE = 'fleet-credentials.json';

const url = (protocols: readonly string[]) =>
  z.string().max(2048).refine((value) => {
    try {
      return protocols.includes(new URL(value).protocol);
    } catch {
      return false;
    }
  }, `a URL with scheme ${protocols.join(' or ')}`);

/** The enrollment answer (POST /api/v1/enroll → 201). Unknown extra fields are ignored. */
export const EnrollmentSchema = z.object({
  deviceId: z.string().regex(DEVICE_ID_PATTERN, 'a device id ([A-Za-z0-9_-], ≤ 64 chars)'),
  secret: z.string().min(1).max(512),
  mqttUrl: url(['mqtt:', 'mqtts:', 'ws:', 'wss:']),
  fleetUrl: url(['http:', 'https:']),
  /** The fleet's ed25519 public key (verifies model signatures); format as the fleet serves it. */
  fleetPublicKey: z.string().min(1).max(4096),
  tags: z.record(z.string(), z.string()).default({}),
});

export const CredentialsSchema = EnrollmentSchema.extend({ enrolledAt: z.iso.datetime({ offset: true }) });

export type Enrollment = z.infer<typeof EnrollmentSchema>;
export type Credentials = z.infer<typeof CredentialsSchema>;

export class CredentialsError extends Error {
  override readonly name = 'CredentialsError';
}

export function credentialsPath(dataDir: string): string {
  return path.join(dataDir, CREDENTIALS_FILE);
}

/**
 * Writes the credentials atomically: a temp file in the same directory (created 0600, so the secret is
 * never readable by others, not even briefly), fsync, rename over the target, fsync the directory so the
 * rename survives a power cut. A crash leaves either the old file or the new one, never half of one.
 */
export function saveCredentials(dataDir: string, credentials: Credentials): string {
  const file = credentialsPath(dataDir);
  mkdirSync(dataDir, { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  // A leftover from a crash may carry another mode; 'wx' then creates ours fresh, 0600 from the first byte.
  rmSync(tmp, { force: true });
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    writeSync(fd, `${JSON.stringify(CredentialsSchema.parse(credentials), null, 2)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  const dir = openSync(dataDir, 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
  return file;
}

export interface LoadedCredentials {
  credentials: Credentials;
  file: string;
  /** Problems worth a log line that did not stop the load (e.g. a group-readable file). */
  warnings: string[];
}

/**
 * Reads the credentials; undefined when the box is not enrolled. Refuses (throws CredentialsError) a
 * world-readable file, as ssh refuses a world-readable key: the secret may already have leaked, so the
 * operator must fix the mode (chmod 600) or re-enroll. A group-readable file loads with a warning.
 */
export function loadCredentials(dataDir: string): LoadedCredentials | undefined {
  const file = credentialsPath(dataDir);
  if (!existsSync(file)) return undefined;
  const warnings: string[] = [];
  const mode = statSync(file).mode & 0o777;
  if (mode & 0o004) throw new CredentialsError(`${file} is readable by every user (mode ${mode.toString(8)}); run chmod 600 on it, or enroll again with --force`);
  if (mode & 0o040) warnings.push(`${file} is readable by its group (mode ${mode.toString(8)}); chmod 600 is recommended`);
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new CredentialsError(`${file} is not valid JSON (${(err as Error).message}); enroll again with --force`);
  }
  const parsed = CredentialsSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new CredentialsError(`${file} is invalid at ${issue.path.join('.') || '(root)'}: ${issue.message}; enroll again with --force`);
  }
  return { credentials: parsed.data, file, warnings };
}
