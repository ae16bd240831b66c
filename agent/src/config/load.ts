import path from 'node:path';
import { ConfigError, configKeysOf, deepFreeze, loadLayered, setPath, type LoadConfigOptions } from '../../../shared/src/config-loader.js';
import { AgentConfigSchema, type AgentConfig } from './schema.js';

export { ConfigError, setPath, type LoadConfigOptions };

/** The agent's configuration from its layers (shared/src/config-loader.ts), with paths resolved. */
export function loadConfig(options: LoadConfigOptions = {}): AgentConfig {
  const cwd = options.cwd ?? process.cwd();
  const c = loadLayered(
    {
      schema: AgentConfigSchema,
      pathKeys: [['dataDir'], ['modelRepository'], ['inference', 'runtimeLibraryPath'], ['inference', 'tensorrtCacheDir'], ['fleet', 'caFile']],
      replaceKeys: ['pinned'],
    },
    options,
  );
  const dataDir = path.resolve(cwd, c.dataDir);
  return deepFreeze({
    ...c,
    dataDir,
    modelRepository: path.resolve(cwd, c.modelRepository ?? path.join(dataDir, 'models')),
    inference: {
      ...c.inference,
      runtimeLibraryPath: c.inference.runtimeLibraryPath && path.resolve(cwd, c.inference.runtimeLibraryPath),
      tensorrtCacheDir: path.resolve(cwd, c.inference.tensorrtCacheDir ?? path.join(dataDir, 'trt-cache')),
    },
    fleet: { ...c.fleet, caFile: c.fleet.caFile && path.resolve(cwd, c.fleet.caFile) },
  });
}

/** Every leaf key of the agent's schema with its env var name. */
export function configKeys(): { path: string[]; env: string }[] {
  return configKeysOf(AgentConfigSchema);
}
