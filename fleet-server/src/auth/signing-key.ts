import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import { generateSigningKey, loadPrivateKey, publicKeyPemOf } from '../../../shared/src/signing.js';
import { isExposed, writeSecretFile } from './secret-file.js';

export const SIGNING_KEY_FILE = 'fleet-signing-key.pem';

export interface SigningKey {
  privateKey: KeyObject;
  /** SPKI PEM; devices receive it at enrollment and verify every model statement with it. */
  publicKeyPem: string;
  file: string;
}

/**
 * The fleet's ed25519 key, <dataDir>/fleet-signing-key.pem (0600), created on first start. An existing file
 * that cannot be read as an ed25519 key stops the server: silently replacing it would make every enrolled
 * device refuse every new model.
 */
export function loadOrCreateSigningKey(dataDir: string, log: Logger): SigningKey {
  const file = path.join(dataDir, SIGNING_KEY_FILE);
  if (!existsSync(file)) {
    writeSecretFile(file, generateSigningKey().privateKeyPem);
    log.info({ file }, 'created the fleet signing key');
  } else if (isExposed(file)) {
    log.warn({ file }, 'the fleet signing key is readable by group or others; chmod 600 it');
  }
  let privateKey: KeyObject;
  try {
    privateKey = loadPrivateKey(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`${file} is not an ed25519 private key in PEM (${(err as Error).message}); restore it from backup`, { cause: err });
  }
  return { privateKey, publicKeyPem: publicKeyPemOf(privateKey), file };
}
