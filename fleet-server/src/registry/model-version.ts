import { artifactUrl } from './model-ref.js';

/** One immutable registry entry: a name, a version, the artifact it points to and the fleet's signature. */
export interface ModelVersionRecord {
  name: string;
  version: number;
  /** Hex sha256 of the artifact bytes; also its file name in the content-addressed store. */
  sha256: string;
  /** Artifact size in bytes. */
  size: number;
  /** The validated manifest (with `sha256` filled in), or null for a bare ONNX file. */
  manifest: Record<string, unknown> | null;
  /** base64 ed25519 signature over modelStatement({name, version, sha256}) (shared/src/signing.ts). */
  signature: string;
  /** ISO-8601 UTC. */
  createdAt: string;
}

/** What the REST API returns for a version. */
export interface ModelVersionView extends ModelVersionRecord {
  artifactUrl: string;
  /** Ids of non-revoked devices whose last reported state lists this name and version. */
  runningOn: string[];
}

export function toView(record: ModelVersionRecord, runningOn: ReadonlyMap<string, string[]>): ModelVersionView {
  return {
    ...record,
    artifactUrl: artifactUrl(record.name, record.version),
    runningOn: runningOn.get(runningKey(record.name, record.version)) ?? [],
  };
}

/** Key of the runningOn index. */
export function runningKey(name: string, version: number): string {
  return `${name}@${version}`;
}
