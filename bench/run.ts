#!/usr/bin/env node
/**
 * `npm run bench`: the agent section (bench/agent.ts), the fleet section (bench/fleet.ts), then the updates
 * section (bench/updates.ts), each its own process so each keeps its own cleanup; `--only agent|fleet|updates`
 * runs one. Every section understands --quick, --results and --keep-temp; any other flag belongs to one section
 * and needs --only. Each section is started
 * with its soft open-file limit raised (the fleet section holds one socket per simulated device). Exit status:
 * the worst of the sections'.
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeNofile, NOFILE_WANTED, nofileOf, spawnWithNofile } from './fleet-nofile.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SECTIONS = { agent: path.join(HERE, 'agent.js'), fleet: path.join(HERE, 'fleet.js'), updates: path.join(HERE, 'updates.js') } as const;
const SECTION_NAMES = Object.keys(SECTIONS) as Section[];
type Section = keyof typeof SECTIONS;
/** Flags every section takes; `--results` is followed by its value. */
const SHARED_FLAGS = new Set(['--quick', '--keep-temp', '--results']);

const USAGE = `usage: npm run bench -- [--only agent|fleet|updates] [options]

  (no --only)        the agent, fleet and updates sections in turn; shared options: --quick, --results DIR, --keep-temp
  --only agent       only the agent bench   (options: npm run bench -- --only agent --help)
  --only fleet       only the fleet bench   (options: npm run bench -- --only fleet --help; also npm run bench:fleet)
  --only updates     only the updates bench: rollout time and latency during hot swaps (npm run bench -- --only updates --help)

A full run takes about 8 min (agent) + 5–8 min (fleet) + 1–1.5 min (updates) on 2 cores; --quick about 2 + 1.5 + 0.3 min.
`;

function parse(argv: string[]): { sections: Section[]; rest: string[] } {
  const rest: string[] = [];
  let only: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--only') only = argv[++i];
    else if (a.startsWith('--only=')) only = a.slice('--only='.length);
    else rest.push(a);
  }
  if (only === undefined) {
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(USAGE);
      process.exit(0);
    }
    for (let i = 0; i < rest.length; i++) {
      const flag = rest[i]!.split('=')[0]!;
      if (!SHARED_FLAGS.has(flag)) throw new Error(`${rest[i]} belongs to one section: add --only ${SECTION_NAMES.join('|')} (npm run bench -- --help)`);
      if (flag === '--results' && !rest[i]!.includes('=')) i++;
    }
    return { sections: SECTION_NAMES, rest };
  }
  if (!SECTION_NAMES.includes(only as Section)) throw new Error(`--only takes ${SECTION_NAMES.join(', ')}, got ${JSON.stringify(only)}`);
  return { sections: [only as Section], rest };
}

let current: ChildProcess | undefined;
let interrupted: NodeJS.Signals | undefined;

function runSection(section: Section, args: string[]): Promise<number> {
  return new Promise((resolve) => {
    // exec in the wrapper keeps the pid, so a signal forwarded here reaches the section's own cleanup.
    const child = spawnWithNofile(process.execPath, [SECTIONS[section], ...args], NOFILE_WANTED, { stdio: 'inherit' });
    current = child;
    child.once('exit', (code, signal) => {
      current = undefined;
      resolve(code ?? (signal === 'SIGINT' ? 130 : 1));
    });
    child.once('error', (err) => {
      process.stderr.write(`bench: cannot start the ${section} section: ${err.message}\n`);
      resolve(1);
    });
  });
}

async function main(): Promise<number> {
  const { sections, rest } = parse(process.argv.slice(2));
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      // A terminal's Ctrl-C reaches the section too (same process group); forwarding covers `kill <pid>`.
      interrupted = signal;
      current?.kill(signal);
    });
  }
  process.stderr.write(`bench: sections ${sections.join(', ')}; open files here ${describeNofile(nofileOf('self'))}, raised to ≥ ${NOFILE_WANTED} for each section where the hard limit allows\n`);
  let worst = 0;
  for (const section of sections) {
    if (interrupted) break;
    const code = await runSection(section, rest);
    if (code !== 0) process.stderr.write(`bench: the ${section} section exited with ${code}\n`);
    worst = Math.max(worst, code);
  }
  return interrupted ? (interrupted === 'SIGINT' ? 130 : 143) : worst;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  },
);
