#!/usr/bin/env node
// The operator CLI, compiled (npm install builds dist/ in its prepare step).
import('../dist/fleet-server/src/cli/main.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND') {
    process.stderr.write('outpost: dist/ is missing; run `npm run build` (npm install does it)\n');
    process.exit(1);
  }
  throw err;
});
