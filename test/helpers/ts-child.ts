import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ts from 'typescript';
import { REPO_ROOT } from './paths.js';

/** Source trees a child process may import from. */
const TREES = ['agent/src', 'shared/src'];

export interface ChildBuild {
  /** Absolute path of the transpiled file for a repository-relative .ts path. */
  pathOf(rel: string): string;
  remove(): void;
}

/**
 * Transpiles the agent's and shared TypeScript (plus `extra` files, e.g. a child script under test/helpers)
 * into a temp dir as ESM JavaScript, for tests that run code in a real child process they can kill -9.
 * Node 20 cannot run .ts itself and dist/ may be stale, so the child always runs the sources under test.
 * Type-only imports are dropped by the transpiler; relative imports already end in .js.
 */
export function transpileForChild(extra: string[]): ChildBuild {
  const out = mkdtempSync(path.join(os.tmpdir(), 'outpost-child-'));
  writeFileSync(path.join(out, 'package.json'), '{"type":"module"}\n');
  // Bare imports (better-sqlite3, zod, pino …) resolve through the repository's node_modules.
  symlinkSync(path.join(REPO_ROOT, 'node_modules'), path.join(out, 'node_modules'), 'dir');
  const files = [...TREES.flatMap((t) => walk(path.join(REPO_ROOT, t))), ...extra.map((e) => path.join(REPO_ROOT, e))];
  for (const file of files) {
    const rel = path.relative(REPO_ROOT, file);
    const target = path.join(out, rel.replace(/\.ts$/, '.js'));
    mkdirSync(path.dirname(target), { recursive: true });
    if (file.endsWith('.ts')) {
      const js = ts.transpileModule(readFileSync(file, 'utf8'), {
        fileName: file,
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, esModuleInterop: true, sourceMap: false },
      }).outputText;
      writeFileSync(target, js);
    } else {
      copyFileSync(file, target);
    }
  }
  return {
    pathOf: (rel) => path.join(out, rel.replace(/\.ts$/, '.js')),
    remove: () => rmSync(out, { recursive: true, force: true }),
  };
}

function walk(dir: string): string[] {
  const found: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) found.push(...walk(p));
    else if ((e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) || e.name.endsWith('.js') || e.name.endsWith('.json')) found.push(p);
  }
  return found;
}
