import { readFileSync } from 'node:fs';

/** The fleet server's version, from package.json (found from both fleet-server/src and dist/fleet-server/src). */
export const FLEET_VERSION: string = (() => {
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'outpost' && pkg.version) return pkg.version;
    } catch {
      // try the next location
    }
  }
  return '0.0.0-unknown';
})();
