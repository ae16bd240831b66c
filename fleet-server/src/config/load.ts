import path from 'node:path';
import { ConfigError, configKeysOf, deepFreeze, loadLayered, type LoadConfigOptions } from '../../../shared/src/config-loader.js';
import { FleetConfigSchema, type FleetConfig } from './schema.js';

export { ConfigError, type LoadConfigOptions };

/** Config keys that hold file system paths: relative ones resolve against the config file, then the cwd. */
const PATH_KEYS = [['dataDir'], ['broker', 'passwordFile'], ['broker', 'pidFile'], ['broker', 'certFile'], ['broker', 'keyFile']] as const;

/** The fleet server's configuration from its layers (shared/src/config-loader.ts), with paths made absolute. */
export function loadFleetConfig(options: LoadConfigOptions = {}): FleetConfig {
  const cwd = options.cwd ?? process.cwd();
  const c = loadLayered({ schema: FleetConfigSchema, pathKeys: PATH_KEYS }, options);
  const abs = (p: string | undefined) => (p === undefined ? undefined : path.resolve(cwd, p));
  return deepFreeze({
    ...c,
    dataDir: path.resolve(cwd, c.dataDir),
    broker: {
      ...c.broker,
      passwordFile: abs(c.broker.passwordFile),
      pidFile: abs(c.broker.pidFile),
      certFile: abs(c.broker.certFile),
      keyFile: abs(c.broker.keyFile),
    },
  });
}

/** Every leaf key of the fleet schema with its env var name (broker.tlsPort → OUTPOST_BROKER_TLS_PORT). */
export function fleetConfigKeys(): { path: string[]; env: string }[] {
  return configKeysOf(FleetConfigSchema);
}
