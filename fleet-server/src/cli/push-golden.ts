import { readFile } from 'node:fs/promises';
import type { Golden } from '../../../shared/src/manifest.js';
import { inspectOnnxFile } from '../registry/onnx-check.js';
import { usageError } from './exit-codes.js';

/**
 * `models push --golden`: the golden input and the model's answer to it (shared/src/manifest.ts GoldenSchema),
 * computed on this machine's CPU and put into the manifest that is pushed, so every device that stages the
 * version checks it answers the same before it serves.
 *
 * Default (neither flag): on for an ONNX file whose manifest has no golden yet; a model the CPU cannot run here
 * is pushed without one and a note says why. `--golden` insists (a failure stops the push, and an existing golden
 * is replaced); `--no-golden` sends the manifest untouched.
 */
export interface GoldenRequest {
  file: string;
  /** The manifest text given with --manifest, or undefined. */
  manifestText: string | undefined;
  name: string;
  version: number;
  /** true: --golden, false: --no-golden, undefined: neither. */
  golden: boolean | undefined;
}

export interface GoldenOutcome {
  /** The manifest text to push (undefined: push the bare file, as before). */
  manifest: string | undefined;
  /** What to tell the operator on stderr once the push is done (after the progress line), or null. */
  note: string | null;
}

export async function manifestWithGolden(req: GoldenRequest): Promise<GoldenOutcome> {
  const unchanged = (note: string | null = null): GoldenOutcome => ({ manifest: req.manifestText, note });
  if (req.golden === false) return unchanged();
  const explicit = req.golden === true;
  const skip = (why: string): GoldenOutcome => {
    if (explicit) throw usageError(`--golden: ${why} (push with --no-golden to skip the golden)`);
    return unchanged();
  };

  let manifest: Record<string, unknown> | null = null;
  if (req.manifestText !== undefined) {
    try {
      const parsed: unknown = JSON.parse(req.manifestText);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return skip('the manifest is not a JSON object');
      manifest = parsed as Record<string, unknown>;
    } catch (err) {
      // Without --golden the server reports what is wrong with the manifest (exit 6).
      return skip(`the manifest is not JSON: ${(err as Error).message}`);
    }
  }
  if (manifest?.golden !== undefined && !explicit) return unchanged();

  const check = await inspectOnnxFile(req.file);
  // Without --golden a non-ONNX file goes up unchanged and the server refuses it with its own message.
  if (!check.ok) return skip(`${req.file} is ${check.reason}`);

  // Only now: golden.ts loads onnxruntime, which costs every other command its start-up time for nothing.
  const { computeGolden } = await import('./golden.js');
  let golden: Golden;
  try {
    golden = await computeGolden(new Uint8Array(await readFile(req.file)), manifest);
  } catch (err) {
    const why = `cannot compute a golden for ${req.file}: ${(err as Error).message}`;
    if (explicit) throw usageError(`${why} (push with --no-golden to skip the golden)`);
    return unchanged(`${why}; pushed without one (--golden to insist, --no-golden to silence this)`);
  }
  const replaced = explicit && manifest?.golden !== undefined ? ' (replacing the manifest\'s)' : '';
  return {
    manifest: JSON.stringify({ ...(manifest ?? { name: req.name, version: req.version }), golden }, null, 2),
    note: `golden${replaced}: ${Object.keys(golden.inputs).join(', ') || 'no input'} → ${Object.keys(golden.outputs).join(', ') || 'no output'}, computed on this machine's CPU`,
  };
}
