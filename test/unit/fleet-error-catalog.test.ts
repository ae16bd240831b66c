import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { FLEET_ERRORS, fail } from '../../fleet-server/src/errors.js';

// The fleet's catalog is an external surface (the CLI and scripts branch on these codes), so
// docs/fleet-errors.md must list each one with the status the server really sends. Reads the doc only.
const DOC = readFileSync(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../docs/fleet-errors.md'), 'utf8');

interface DocRow {
  httpStatus: number;
  retryable: boolean;
  when: string;
}

/** Table rows of the form | `FLEET_X` | 400 | no | when | what to do |. */
function documentedRows(markdown: string): Map<string, DocRow> {
  const rows = new Map<string, DocRow>();
  for (const line of markdown.split('\n')) {
    const m = /^\|\s*`(FLEET_[A-Z0-9_]+)`\s*\|\s*(\d{3})\s*\|\s*(yes|no)\s*\|([^|]*)\|/.exec(line);
    if (!m) continue;
    if (rows.has(m[1]!)) throw new Error(`docs/fleet-errors.md lists ${m[1]} twice`);
    rows.set(m[1]!, { httpStatus: Number(m[2]), retryable: m[3] === 'yes', when: m[4]!.trim() });
  }
  return rows;
}

const rows = documentedRows(DOC);
const catalog = Object.entries(FLEET_ERRORS);

describe('fleet error catalog', () => {
  it('the doc table parses (guards against a format change silently emptying the checks below)', () => {
    expect(rows.size).toBeGreaterThan(0);
  });

  it('documents every catalog code with its HTTP status and retryability', () => {
    const missing = catalog.filter(([code]) => !rows.has(code)).map(([code]) => code);
    expect(missing, 'codes in fleet-server/src/errors.ts missing from docs/fleet-errors.md').toEqual([]);
    for (const [code, spec] of catalog) {
      const row = rows.get(code)!;
      expect({ code, httpStatus: row.httpStatus, retryable: row.retryable }).toEqual({ code, httpStatus: spec.httpStatus, retryable: spec.retryable });
      expect(row.when.length, `${code} needs a description in docs/fleet-errors.md`).toBeGreaterThan(20);
    }
  });

  it('documents no code the fleet server does not have, anywhere on the page', () => {
    const mentioned = new Set(DOC.match(/\bFLEET_[A-Z0-9_]+\b/g) ?? []);
    const unknown = [...mentioned].filter((code) => !Object.hasOwn(FLEET_ERRORS, code));
    expect(unknown, 'codes in docs/fleet-errors.md that fleet-server/src/errors.ts does not define').toEqual([]);
  });

  it('every code is FLEET_-prefixed and maps to an error status (4xx/5xx) with a description', () => {
    for (const [code, spec] of catalog) {
      expect(code).toMatch(/^FLEET_[A-Z0-9_]+$/);
      expect(spec.httpStatus, code).toBeGreaterThanOrEqual(400);
      expect(spec.httpStatus, code).toBeLessThan(600);
      expect(spec.description.length, code).toBeGreaterThan(0);
    }
  });

  it('retryable codes are server-side conditions (5xx or 408), never a client mistake (other 4xx)', () => {
    for (const [code, spec] of catalog) {
      if (spec.retryable) expect([408, 500, 502, 503, 504].includes(spec.httpStatus), code).toBe(true);
    }
  });

  it('fail() builds errors carrying the catalog status, retryability and the {error, code} body', () => {
    const e = fail('FLEET_UNAVAILABLE', 'starting');
    expect(e.httpStatus).toBe(503);
    expect(e.retryable).toBe(true);
    expect(JSON.parse(JSON.stringify(e))).toEqual({ error: 'starting', code: 'FLEET_UNAVAILABLE' });
  });
});
