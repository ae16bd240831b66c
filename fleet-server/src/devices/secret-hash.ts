import { pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Device secrets are stored hashed, in Mosquitto's `$7$` format (PBKDF2-SHA512:
 * `$7$<iterations>$<base64 salt>$<base64 64-byte hash>`), so the same hash serves our embedded broker and
 * an external Mosquitto's password_file. Secrets are 32 random bytes, so the work factor guards little;
 * 1000 iterations keeps a reconnect storm of 1000 devices cheap while staying above Mosquitto's 101.
 */
const ITERATIONS = 1000;
const SALT_BYTES = 12;
const HASH_BYTES = 64;

export function hashSecret(secret: string, iterations = ITERATIONS): string {
  const salt = randomBytes(SALT_BYTES);
  const hash = pbkdf2Sync(secret, salt, iterations, HASH_BYTES, 'sha512');
  return `$7$${iterations}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

export function verifySecret(secret: string, stored: string): boolean {
  const parts = stored.split('$');
  // ['', '7', iterations, salt, hash]
  if (parts.length !== 5 || parts[1] !== '7') return false;
  const iterations = Number(parts[2]);
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > 1_000_000) return false;
  const expected = Buffer.from(parts[4]!, 'base64');
  if (expected.length !== HASH_BYTES) return false;
  const actual = pbkdf2Sync(secret, Buffer.from(parts[3]!, 'base64'), iterations, HASH_BYTES, 'sha512');
  return timingSafeEqual(actual, expected);
}

/** A new device secret: 32 random bytes, base64url (43 characters). */
export function newSecret(): string {
  return randomBytes(32).toString('base64url');
}
