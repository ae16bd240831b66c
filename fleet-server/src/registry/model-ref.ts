/**
 * Model names and versions as the registry accepts them. Names appear in URLs and CLI arguments
 * (`outpost models rm simple@2`), so they are lower-case and URL-safe; artifacts are stored by content
 * hash, so a name never becomes a file path.
 */
export const MODEL_NAME_PATTERN = /^[a-z0-9][a-z0-9_.-]{0,63}$/;

/** Largest version the MQTT schemas carry (shared/src/mqtt/messages.ts); bounded against fast-forward (U7). */
export const MAX_MODEL_VERSION = 2 ** 31 - 1;

export function isModelName(raw: string): boolean {
  return MODEL_NAME_PATTERN.test(raw);
}

/** A positive integer written in decimal without sign or leading zeros, at most MAX_MODEL_VERSION; else null. */
export function parseModelVersion(raw: string): number | null {
  if (!/^[1-9][0-9]{0,9}$/.test(raw)) return null;
  const v = Number(raw);
  return v <= MAX_MODEL_VERSION ? v : null;
}

/** `simple@2` → {name, version}; null when either half is malformed. */
export function parseModelRef(ref: string): { name: string; version: number } | null {
  const at = ref.lastIndexOf('@');
  if (at <= 0) return null;
  const name = ref.slice(0, at);
  const version = parseModelVersion(ref.slice(at + 1));
  return isModelName(name) && version !== null ? { name, version } : null;
}

/** Where agents and operators download the artifact; relative to the fleet server's base URL. */
export function artifactUrl(name: string, version: number): string {
  return `/api/v1/models/${name}/versions/${version}/artifact`;
}
