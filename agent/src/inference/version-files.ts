/** What loading a version reads besides the model: its manifest, and the inputs it is warmed up with. */
import { readFile } from 'node:fs/promises';
import type { ModelSpec } from '../repository/model-spec.js';
import { parseManifest, type Manifest } from '../../../shared/src/manifest.js';
import { DATATYPES, type HostTensor, type NumericDatatype } from './tensor.js';

export async function readManifest(file: string, name: string, version: number): Promise<Manifest> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new Error(`manifest.json is not valid JSON: ${(err as Error).message}`);
  }
  const parsed = parseManifest(json);
  if (!parsed.ok) throw new Error(`manifest.json is invalid: ${parsed.problems.join('; ')}`);
  if (parsed.manifest.name !== name || parsed.manifest.version !== version) {
    throw new Error(`manifest.json says ${parsed.manifest.name}@${parsed.manifest.version} but lives in ${name}/${version}`);
  }
  return parsed.manifest;
}

/** Zero inputs of batch 1, with the image size where the model takes images, to warm the session up. */
export function dummyFeeds(spec: ModelSpec): Record<string, HostTensor> {
  const feeds: Record<string, HostTensor> = {};
  for (const input of spec.inputs) {
    if (input.datatype === 'BYTES') throw new Error(`input '${input.name}' is a string tensor; not supported`);
    let dims = input.dims.map((d) => (d < 0 ? 1 : d));
    if (spec.image && input.name === spec.image.input) {
      const [h, w] = spec.image.spec.size;
      dims = spec.image.layout === 'NCHW' ? [1, 3, h, w] : [1, h, w, 3];
    }
    const n = dims.reduce((a, b) => a * b, 1);
    feeds[input.name] = { datatype: input.datatype as NumericDatatype, dims, data: DATATYPES[input.datatype as NumericDatatype].make(n) };
  }
  return feeds;
}
