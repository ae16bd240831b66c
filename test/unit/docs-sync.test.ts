import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { configKeys } from '../../agent/src/config/load.js';
import { createAgentMetrics } from '../../agent/src/metrics/agent-metrics.js';
import { REPO_ROOT } from '../helpers/paths.js';

/** The README documents every config key and every Outpost metric; these fail when one is added undocumented. */
const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');

describe('README stays in sync with the code', () => {
  it('documents every configuration key with its environment variable', () => {
    const missing = configKeys().filter((k) => !readme.includes(`\`${k.path.join('.')}\``) || !readme.includes(`\`${k.env}\``));
    expect(missing.map((k) => k.path.join('.'))).toEqual([]);
  });

  it('documents every outpost_* metric the agent registers', async () => {
    const metrics = createAgentMetrics();
    const names = (await metrics.registry.getMetricsAsJSON()).map((m) => m.name).filter((n) => n.startsWith('outpost_'));
    expect(names.length).toBeGreaterThan(5);
    expect(names.filter((n) => !readme.includes(`\`${n}\``))).toEqual([]);
  });
});
