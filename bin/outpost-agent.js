#!/usr/bin/env node
// Runs the compiled agent (npm install builds dist/ in its prepare step).
import('../dist/agent/src/main.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND') {
    process.stderr.write('outpost-agent: dist/ is missing; run `npm run build` (npm install does it)\n');
    process.exit(1);
  }
  throw err;
});
