import { FLEET_ERRORS, fail } from '../../fleet-server/src/errors.js';
import { errorCatalogSuite } from '../helpers/error-catalog-suite.js';

errorCatalogSuite({
  name: 'fleet error catalog', prefix: 'FLEET', catalog: FLEET_ERRORS, doc: 'docs/fleet-errors.md', source: 'fleet-server/src/errors.ts',
  sample: { fail: (code, message) => fail(code as keyof typeof FLEET_ERRORS, message), code: 'FLEET_UNAVAILABLE', httpStatus: 503 },
});
