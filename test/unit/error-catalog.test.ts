import { expect, it } from 'vitest';
import { AGENT_ERRORS, fail } from '../../agent/src/errors.js';
import { errorCatalogSuite } from '../helpers/error-catalog-suite.js';

errorCatalogSuite({
  name: 'agent error catalog', prefix: 'AGENT', catalog: AGENT_ERRORS, doc: 'docs/errors.md', source: 'agent/src/errors.ts',
  sample: { fail: (code, message) => fail(code as keyof typeof AGENT_ERRORS, message), code: 'AGENT_OVERLOADED', httpStatus: 503 },
});

it('fail() carries extra headers such as Retry-After to the HTTP layer', () => {
  expect(fail('AGENT_OVERLOADED', 'queue full', { headers: { 'retry-after': '1' } }).headers['retry-after']).toBe('1');
});
