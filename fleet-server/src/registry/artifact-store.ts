import { createHash, randomUUID } from 'node:crypto';
import { closeSync, createWriteStream, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, unlinkSync } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fail } from '../errors.js';

/** An upload written to a temp file, hashed on the way; not yet part of the store. */
export interface ReceivedArtifact {
  tmpPath: string;
  sha256: string;
  /** Bytes. */
  size: number;
}

/**
 * Content-addressed artifact files: `<root>/sha256/<first two hex>/<full hash>`, so identical bytes pushed as
 * several versions are stored once. Uploads stream into `<root>/tmp/` while hashing and are renamed into place
 * only when complete and fsynced, so a crash never leaves a partial file under a hash name.
 */
export interface ArtifactStore {
  /** `<dataDir>/artifacts`. */
  readonly root: string;
  /** Path of an artifact relative to root, e.g. `sha256/ab/ab12…`. */
  relativePathOf(sha256: string): string;
  pathOf(sha256: string): string;
  /**
   * Streams `source` into a temp file, never holding more than a stream buffer in memory. Consumes the whole
   * source even past `maxBytes` (the excess is counted and dropped, so the HTTP request still ends normally),
   * then refuses with FLEET_PAYLOAD_TOO_LARGE and removes the temp file.
   */
  receive(source: Readable, maxBytes: number): Promise<ReceivedArtifact>;
  /**
   * Moves a received file to its content address, or drops it when those bytes are already stored.
   * Synchronous on purpose (see upload.ts). Returns true when the file is new.
   */
  place(received: ReceivedArtifact): boolean;
  /** Removes a received temp file (idempotent). */
  discard(received: ReceivedArtifact): void;
  /** Removes a stored artifact (idempotent). */
  remove(sha256: string): void;
  /** Deletes temp files left by a crash mid-upload; call once at startup. Returns how many. */
  removeStaleTemps(): number;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

function fsyncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function createArtifactStore(root: string): ArtifactStore {
  const tmpDir = path.join(root, 'tmp');
  mkdirSync(tmpDir, { recursive: true });
  mkdirSync(path.join(root, 'sha256'), { recursive: true });

  function relativePathOf(sha256: string): string {
    // INVARIANT: only a hex digest ever becomes a path, so nothing can escape the store.
    if (!SHA256_HEX.test(sha256)) throw new Error(`not a sha256 hex digest: ${sha256.slice(0, 80)}`);
    return path.join('sha256', sha256.slice(0, 2), sha256);
  }
  const pathOf = (sha256: string): string => path.join(root, relativePathOf(sha256));

  async function receive(source: Readable, maxBytes: number): Promise<ReceivedArtifact> {
    const tmpPath = path.join(tmpDir, `${randomUUID()}.part`);
    const hash = createHash('sha256');
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        size += chunk.length;
        if (size > maxBytes) return callback(); // over the cap: count, never write
        hash.update(chunk);
        callback(null, chunk);
      },
    });
    try {
      await pipeline(source, meter, createWriteStream(tmpPath, { flags: 'wx', mode: 0o640 }));
      if (size > maxBytes) throw fail('FLEET_PAYLOAD_TOO_LARGE', `artifact is larger than the limit of ${maxBytes} bytes`);
      // fsync through a second descriptor (it syncs the inode): the stream closes its own when done.
      const file = await open(tmpPath, 'r+');
      try {
        await file.sync();
      } finally {
        await file.close();
      }
    } catch (err) {
      await rm(tmpPath, { force: true });
      throw err;
    }
    return { tmpPath, sha256: hash.digest('hex'), size };
  }

  function place(received: ReceivedArtifact): boolean {
    const target = pathOf(received.sha256);
    if (existsSync(target)) {
      rmSync(received.tmpPath, { force: true });
      return false;
    }
    mkdirSync(path.dirname(target), { recursive: true });
    renameSync(received.tmpPath, target);
    // The rename is durable only once its directory is synced; the row inserted next must never outlive it.
    fsyncDirectory(path.dirname(target));
    return true;
  }

  return {
    root,
    relativePathOf,
    pathOf,
    receive,
    place,
    discard: (received) => rmSync(received.tmpPath, { force: true }),
    remove: (sha256) => rmSync(pathOf(sha256), { force: true }),
    removeStaleTemps: () => {
      let removed = 0;
      for (const entry of readdirSync(tmpDir)) {
        if (!entry.endsWith('.part')) continue;
        unlinkSync(path.join(tmpDir, entry));
        removed++;
      }
      return removed;
    },
  };
}
