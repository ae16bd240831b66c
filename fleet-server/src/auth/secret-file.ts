import { chmodSync, rmSync, statSync, writeFileSync } from 'node:fs';

/**
 * Writes a file only its owner can read (mode 0600). The old file is removed first and the new one created
 * exclusively with the mode, so there is no moment when the secret sits in a file with wider permissions.
 */
export function writeSecretFile(file: string, content: string): void {
  rmSync(file, { force: true });
  writeFileSync(file, content, { mode: 0o600, flag: 'wx' });
  // The umask cannot widen 0600, but an odd umask could narrow it to 0400; set it exactly.
  chmodSync(file, 0o600);
}

/** True when group or others may read or write the file. */
export function isExposed(file: string): boolean {
  return (statSync(file).mode & 0o077) !== 0;
}
