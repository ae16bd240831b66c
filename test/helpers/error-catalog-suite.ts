import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ErrorSpec, OutpostError } from '../../shared/src/errors.js';
import { REPO_ROOT } from './paths.js';

/**
 * One contract suite for every error catalog (agent, fleet server): the catalog is an external surface —
 * clients, the CLI and scripts branch on its codes — so its doc page must list each code with the status the
 * code really sends, and mention no code that does not exist. Reads the checked-in doc, nothing else.
 */
export function errorCatalogSuite(opts: {
  name: string;
  /** Code prefix, e.g. AGENT or FLEET. */
  prefix: string;
  catalog: Record<string, ErrorSpec>;
  /** Doc page and catalog source, relative to the repository root. */
  doc: string;
  source: string;
  /** A retryable code and a status the catalog's fail() must turn into an error. */
  sample: { fail: (code: string, message: string) => OutpostError; code: string; httpStatus: number };
}): void {
  const text = readFileSync(path.join(REPO_ROOT, opts.doc), 'utf8');
  const rows = documentedRows(text, opts.prefix, opts.doc);
  const catalog = Object.entries(opts.catalog);

  describe(opts.name, () => {
    it('the doc table parses (guards against a format change silently emptying the checks below)', () => {
      expect(rows.size).toBeGreaterThan(0);
    });

    it('documents every catalog code with its HTTP status and retryability', () => {
      const missing = catalog.filter(([code]) => !rows.has(code)).map(([code]) => code);
      expect(missing, `codes in ${opts.source} missing from ${opts.doc}`).toEqual([]);
      for (const [code, spec] of catalog) {
        const row = rows.get(code)!;
        expect({ code, httpStatus: row.httpStatus, retryable: row.retryable }).toEqual({ code, httpStatus: spec.httpStatus, retryable: spec.retryable });
        expect(row.when.length, `${code} needs a description in ${opts.doc}`).toBeGreaterThan(20);
      }
    });

    it('documents no code the catalog does not have, anywhere on the page', () => {
      const mentioned = new Set(text.match(new RegExp(`\\b${opts.prefix}_[A-Z0-9_]+\\b`, 'g')) ?? []);
      const unknown = [...mentioned].filter((code) => !Object.hasOwn(opts.catalog, code));
      expect(unknown, `codes in ${opts.doc} that ${opts.source} does not define`).toEqual([]);
    });

    it(`every code is ${opts.prefix}_-prefixed and maps to an error status (4xx/5xx) with a description`, () => {
      for (const [code, spec] of catalog) {
        expect(code).toMatch(new RegExp(`^${opts.prefix}_[A-Z0-9_]+$`));
        expect(spec.httpStatus, code).toBeGreaterThanOrEqual(400);
        expect(spec.httpStatus, code).toBeLessThan(600);
        expect(spec.description.length, code).toBeGreaterThan(0);
      }
    });

    it('retryable codes are server-side conditions (5xx or 408), never a client mistake (other 4xx)', () => {
      for (const [code, spec] of catalog) {
        if (spec.retryable) expect(spec.httpStatus === 408 || spec.httpStatus >= 500, code).toBe(true);
      }
    });

    it('fail() builds errors carrying the catalog status, retryability and the {error, code} body', () => {
      const e = opts.sample.fail(opts.sample.code, 'try later');
      expect(e.httpStatus).toBe(opts.sample.httpStatus);
      expect(e.retryable).toBe(opts.catalog[opts.sample.code]!.retryable);
      expect(JSON.parse(JSON.stringify(e))).toEqual({ error: 'try later', code: opts.sample.code });
    });
  });
}

/** Table rows of the form | `PREFIX_X` | 400 | no | when | what to do |. */
function documentedRows(markdown: string, prefix: string, doc: string): Map<string, { httpStatus: number; retryable: boolean; when: string }> {
  const rows = new Map<string, { httpStatus: number; retryable: boolean; when: string }>();
  const row = new RegExp(`^\\|\\s*\`(${prefix}_[A-Z0-9_]+)\`\\s*\\|\\s*(\\d{3})\\s*\\|\\s*(yes|no)\\s*\\|([^|]*)\\|`);
  for (const line of markdown.split('\n')) {
    const m = row.exec(line);
    if (!m) continue;
    if (rows.has(m[1]!)) throw new Error(`${doc} lists ${m[1]} twice`);
    rows.set(m[1]!, { httpStatus: Number(m[2]), retryable: m[3] === 'yes', when: m[4]!.trim() });
  }
  return rows;
}
