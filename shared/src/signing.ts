import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';

/**
 * ed25519 signatures over model statements. The fleet signs; the agent verifies with the public key it
 * received at enrollment. The signed bytes are a domain tag plus canonical JSON (keys sorted), so a
 * signature over one kind of statement can never be replayed as another, and field order does not matter.
 *
 * Issue 4 signs (name, version, sha256). The update path (issue 5) adds fields such as a monotonic
 * deployment counter or an expiry to the same statement; every field present is covered.
 */
export const SIGNATURE_DOMAIN = 'outpost-model-statement-v1';

export type Statement = Readonly<Record<string, string | number>>;

export function statementBytes(statement: Statement): Buffer {
  const keys = Object.keys(statement).sort();
  for (const k of keys) {
    const v = statement[k];
    if (typeof v !== 'string' && !(typeof v === 'number' && Number.isSafeInteger(v))) throw new Error(`statement field ${k} must be a string or a safe integer`);
  }
  const canonical = JSON.stringify(Object.fromEntries(keys.map((k) => [k, statement[k]])));
  return Buffer.from(`${SIGNATURE_DOMAIN}\n${canonical}`, 'utf8');
}

/**
 * What the fleet signs for one device when it deploys a model version to it (issue 5, docs/updates.md
 * "Threat model"): the device, the artifact (name, version, sha256, size), the manifest it must be loaded with
 * (sha256 of its canonical JSON, '' when none), a fleet-wide monotonic deployment counter (rollback/replay
 * protection: the agent refuses a counter below the highest it has accepted for the model) and an expiry
 * (freeze protection: no new install from expired metadata). `kind` keeps it apart from the registry's
 * model statement, which has no such field.
 */
export interface Deployment {
  device: string;
  name: string;
  version: number;
  sha256: string;
  size: number;
  manifestSha256: string;
  deployment: number;
  expires: string;
  /** A removal (tombstone): signed as `remove: 1`; absent from the statement otherwise. */
  remove?: boolean;
}

export function deploymentStatement(d: Deployment): Statement {
  return {
    kind: 'deployment', device: d.device, name: d.name, version: d.version, sha256: d.sha256, size: d.size,
    manifestSha256: d.manifestSha256, deployment: d.deployment, expires: d.expires, ...(d.remove ? { remove: 1 } : {}),
  };
}

/** sha256 (hex) of a manifest's canonical JSON (keys sorted at every depth); '' for no manifest. */
export function manifestDigest(manifest: unknown): string {
  if (manifest === null || manifest === undefined) return '';
  return createHash('sha256').update(canonicalJson(manifest)).digest('hex');
}

export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** The model statement the registry signs: what the artifact is, by name, version and content hash. */
export function modelStatement(m: { name: string; version: number; sha256: string }): Statement {
  return { name: m.name, version: m.version, sha256: m.sha256 };
}

export function signStatement(privateKey: KeyObject, statement: Statement): string {
  return sign(null, statementBytes(statement), privateKey).toString('base64');
}

/** False (never throws) for a malformed signature, a wrong key or any changed field. */
export function verifyStatement(publicKey: KeyObject | string, statement: Statement, signatureBase64: string): boolean {
  try {
    const key = typeof publicKey === 'string' ? createPublicKey(publicKey) : publicKey;
    if (key.asymmetricKeyType !== 'ed25519') return false;
    return verify(null, statementBytes(statement), key, Buffer.from(signatureBase64, 'base64'));
  } catch {
    return false;
  }
}

export function generateSigningKey(): { privateKeyPem: string; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

export function loadPrivateKey(pem: string): KeyObject {
  const key = createPrivateKey(pem);
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`signing key is ${key.asymmetricKeyType}, not ed25519`);
  return key;
}

export function publicKeyPemOf(privateKey: KeyObject): string {
  return createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }).toString();
}
