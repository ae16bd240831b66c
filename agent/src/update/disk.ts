import { lstatSync, readdirSync, statfsSync } from 'node:fs';
import path from 'node:path';

/**
 * Disk guards checked before the first byte of a download (DESIGN §3.4): a box's flash holds the models, the
 * outbox and the OS, so an update must neither grow the models past their budget nor fill the filesystem.
 */
export class DiskBudgetError extends Error {
  override readonly name = 'DiskBudgetError';
  /** An update is never retried into a full disk: both are permanent for the deployment that asked. */
  readonly permanent = true;

  constructor(
    readonly code: 'disk_budget' | 'disk_full',
    message: string,
  ) {
    super(message);
  }
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/**
 * Bytes of the regular files under `dir`, recursively; 0 for a missing directory. Symlinks are not followed
 * (a link to /usr must not count /usr). Files that vanish during the walk (a GC running beside it) count 0.
 */
export function dirBytes(dir: string): number {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    if (isMissing(err)) return 0;
    throw err;
  }
  let total = 0;
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += dirBytes(p);
    else if (e.isFile()) {
      try {
        total += lstatSync(p).size;
      } catch (err) {
        if (!isMissing(err)) throw err;
      }
    }
  }
  return total;
}

/** The nearest existing ancestor (statfs needs an existing path; the staging dir may not exist yet). */
function existingAncestor(p: string): string {
  let cur = path.resolve(p);
  for (;;) {
    try {
      lstatSync(cur);
      return cur;
    } catch (err) {
      if (!isMissing(err)) throw err;
      const parent = path.dirname(cur);
      if (parent === cur) return cur;
      cur = parent;
    }
  }
}

function contains(outer: string, inner: string): boolean {
  const rel = path.relative(path.resolve(outer), path.resolve(inner));
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

export interface DiskBudgetCheck {
  repositoryDir: string;
  stagingDir: string;
  /** Bytes the download will still write (for a resumed .part: size − bytes already in it, which count as used). */
  needBytes: number;
  /** Most bytes repositoryDir + stagingDir may hold together (update.diskBudgetBytes). */
  budgetBytes: number;
  /** Free bytes the filesystem of stagingDir must keep after the download (update.minFreeBytes). */
  minFreeBytes: number;
}

/** Throws DiskBudgetError when the download would pass the budget or leave less than minFreeBytes free. */
export function checkDiskBudget(o: DiskBudgetCheck): void {
  // Counted once when one directory lies inside the other.
  const used = contains(o.repositoryDir, o.stagingDir)
    ? dirBytes(o.repositoryDir)
    : contains(o.stagingDir, o.repositoryDir)
      ? dirBytes(o.stagingDir)
      : dirBytes(o.repositoryDir) + dirBytes(o.stagingDir);
  if (used + o.needBytes > o.budgetBytes) {
    throw new DiskBudgetError(
      'disk_budget',
      `update needs ${o.needBytes} bytes (${mb(o.needBytes)}) but the model repository and staging already hold ${used} bytes (${mb(used)}): ` +
        `${used + o.needBytes} > update.diskBudgetBytes ${o.budgetBytes} (${mb(o.budgetBytes)})`,
    );
  }
  const fsPath = existingAncestor(o.stagingDir);
  const st = statfsSync(fsPath);
  // bavail: blocks an unprivileged writer may use (root's reserve excluded), which is what the agent will get.
  const free = st.bavail * st.bsize;
  if (free - o.needBytes < o.minFreeBytes) {
    throw new DiskBudgetError(
      'disk_full',
      `update needs ${o.needBytes} bytes (${mb(o.needBytes)}) but the filesystem of ${fsPath} has ${free} bytes (${mb(free)}) free: ` +
        `${free} − ${o.needBytes} = ${free - o.needBytes} < update.minFreeBytes ${o.minFreeBytes} (${mb(o.minFreeBytes)})`,
    );
  }
}
