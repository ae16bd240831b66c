import { createHash } from 'node:crypto';
import { createReadStream, lstatSync, realpathSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { DesiredModel } from '../../../shared/src/mqtt/messages.js';
import { deploymentStatement, manifestDigest, verifyStatement } from '../../../shared/src/signing.js';

/**
 * What the agent checks before it trusts a desired entry and the bytes it downloaded for it (docs/updates.md
 * "Threat model"): the fleet's signature binds the entry to this device, the artifact, its manifest, a
 * monotonic deployment counter and an expiry; the bytes must then match the signed size and hash.
 * (The counter's "not below the highest accepted" rule needs the agent's store and lives in the update machine.)
 */

export class VerifyError extends Error {
  override readonly name = 'VerifyError';
  /** The bytes are not the signed artifact: downloading the same URL again is the only retry that may help. */
  readonly permanent = true;

  constructor(
    readonly code: 'size_mismatch' | 'hash_mismatch',
    message: string,
  ) {
    super(message);
  }
}

/** Streams the file through sha256 (a model may be larger than the box's free memory). */
export async function verifyArtifact(file: string, expected: { size: number; sha256: string }): Promise<void> {
  const { size } = await stat(file);
  if (size !== expected.size) throw new VerifyError('size_mismatch', `${file} is ${size} bytes, the signed size is ${expected.size}`);
  const hash = createHash('sha256');
  let read = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) {
    hash.update(chunk as Buffer);
    read += (chunk as Buffer).length;
  }
  // The file may change between stat and read (it should not: nobody else writes the staging dir).
  if (read !== expected.size) throw new VerifyError('size_mismatch', `${file} read ${read} bytes, the signed size is ${expected.size}`);
  const actual = hash.digest('hex');
  if (actual !== expected.sha256.toLowerCase()) {
    throw new VerifyError('hash_mismatch', `${file} has sha256 ${actual}, the signed sha256 is ${expected.sha256}`);
  }
}

export type DeploymentRefusal = 'unsigned' | 'bad_signature' | 'expired' | 'unsafe_name' | 'manifest_mismatch';
export type DeploymentCheck = { ok: true } | { ok: false; code: DeploymentRefusal; message: string };

/** A model name that is one path segment, usable as a directory name everywhere (same rule as the manifest). */
export const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function isSafeName(name: unknown): name is string {
  // The regex already refuses '.', '..', '/', '\\' and a leading dot; '..' inside (a..b) is a plain file name.
  return typeof name === 'string' && SAFE_NAME.test(name);
}

const refuse = (code: DeploymentRefusal, message: string): DeploymentCheck => ({ ok: false, code, message });

/**
 * Whether a desired entry may be installed on this device. Checked in this order, first failure wins: a safe
 * name, a signature at all, a valid signature by the enrolled fleet key over every field that matters, an
 * unexpired statement, and a manifest that describes this very artifact. Never throws.
 */
export function checkDeployment(entry: DesiredModel, ctx: { deviceId: string; fleetPublicKeyPem: string; now: Date }): DeploymentCheck {
  try {
    const what = `${String(entry.name).slice(0, 140)}@${String(entry.version)}`;
    if (!isSafeName(entry.name)) return refuse('unsafe_name', `model name ${JSON.stringify(String(entry.name).slice(0, 140))} is not a safe path segment (${SAFE_NAME.source})`);
    if (typeof entry.signature !== 'string' || entry.signature.trim() === '') return refuse('unsigned', `${what} (deployment ${entry.deployment}) carries no signature`);
    if (!ctx.fleetPublicKeyPem) return refuse('bad_signature', `${what}: no fleet public key is enrolled to verify the signature with`);
    let statement;
    try {
      statement = deploymentStatement({
        device: ctx.deviceId,
        name: entry.name,
        version: entry.version,
        sha256: entry.sha256,
        size: entry.size,
        manifestSha256: manifestDigest(entry.manifest),
        deployment: entry.deployment,
        expires: entry.expires,
        remove: entry.remove === true,
      });
    } catch (err) {
      return refuse('bad_signature', `${what}: the entry cannot form a signed statement: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (!verifyStatement(ctx.fleetPublicKeyPem, statement, entry.signature)) {
      return refuse('bad_signature', `${what} (deployment ${entry.deployment}): the signature does not verify with the enrolled fleet key for device ${ctx.deviceId}`);
    }
    const expiresMs = Date.parse(entry.expires);
    if (Number.isNaN(expiresMs)) return refuse('expired', `${what}: expiry ${JSON.stringify(entry.expires)} is not a date`);
    if (expiresMs <= ctx.now.getTime()) {
      return refuse('expired', `${what} (deployment ${entry.deployment}) expired at ${entry.expires}; it is now ${ctx.now.toISOString()}`);
    }
    if (entry.manifest !== null && entry.manifest !== undefined) {
      const m = entry.manifest;
      const checks: Array<[string, unknown, unknown]> = [
        ['name', m['name'], entry.name],
        ['version', m['version'], entry.version],
        ['sha256', m['sha256'], entry.sha256],
      ];
      for (const [field, inManifest, inEntry] of checks) {
        if (inManifest !== undefined && inManifest !== inEntry) {
          return refuse('manifest_mismatch', `${what}: the manifest's ${field} is ${JSON.stringify(inManifest)}, the entry's is ${JSON.stringify(inEntry)}`);
        }
      }
    }
    return { ok: true };
  } catch (err) {
    // Defensive: a malformed entry that slipped past the schema is a refusal, not a crash of the update loop.
    return refuse('bad_signature', `the entry cannot be checked: ${err instanceof Error ? err.message : String(err)}`);
  }
}

export class UnsafeNameError extends Error {
  override readonly name = 'UnsafeNameError';
  readonly code = 'unsafe_name' as const;
}

function inside(root: string, p: string): boolean {
  const rel = path.relative(root, p);
  return rel !== '' && !rel.startsWith(`..${path.sep}`) && rel !== '..' && !path.isAbsolute(rel);
}

/** realpath of the longest existing prefix of p, with the rest appended (p need not exist yet). */
function realpathOfExisting(p: string): string {
  const rest: string[] = [];
  let cur = p;
  for (;;) {
    try {
      lstatSync(cur);
      return path.join(realpathSync(cur), ...rest.reverse());
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      const parent = path.dirname(cur);
      if (parent === cur) return p;
      rest.push(path.basename(cur));
      cur = parent;
    }
  }
}

/**
 * <repositoryDir>/<name>/<version>, refusing anything that could land elsewhere: a name that is not one safe
 * segment, and a path that leaves the repository once resolved — lexically, or through a symlink already on
 * disk (a planted <repo>/<name> → /usr/lib link must not receive a model).
 */
export function safeVersionDir(repositoryDir: string, name: string, version: number): string {
  if (!isSafeName(name)) throw new UnsafeNameError(`model name ${JSON.stringify(String(name).slice(0, 140))} is not a safe path segment (${SAFE_NAME.source})`);
  if (!Number.isSafeInteger(version) || version < 1) throw new UnsafeNameError(`model version ${String(version)} is not a positive integer`);
  const root = path.resolve(repositoryDir);
  const dir = path.resolve(root, name, String(version));
  if (!inside(root, dir)) throw new UnsafeNameError(`${dir} is outside the model repository ${root}`);
  const realRoot = realpathOfExisting(root);
  const realDir = realpathOfExisting(dir);
  if (!inside(realRoot, realDir)) throw new UnsafeNameError(`${dir} resolves to ${realDir}, outside the model repository ${realRoot}`);
  return dir;
}
