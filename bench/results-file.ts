import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/**
 * Writes a bench section's report as `<dir>/<prefix>-<ISO time>.json` plus its `latest` copy, prints the Markdown
 * on stdout and the file names on stderr (through `log`); returns the exit status (0 when the report is ok).
 */
export function publishReport(o: {
  report: { ok: boolean; wallClockS: number };
  failures: number;
  markdown: string;
  resultsDir: string;
  prefix: string;
  latestName: string;
  startedAt: Date;
  log: (line: string) => void;
}): number {
  mkdirSync(o.resultsDir, { recursive: true });
  const json = JSON.stringify(o.report, null, 2);
  const file = path.join(o.resultsDir, `${o.prefix}-${o.startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, json);
  writeFileSync(path.join(o.resultsDir, o.latestName), json);
  process.stdout.write(o.markdown);
  o.log(`JSON: ${path.relative(process.cwd(), file)} (and ${o.latestName}); wall clock ${o.report.wallClockS.toFixed(0)} s; ${o.report.ok ? 'OK' : `FAILED (${o.failures})`}`);
  return o.report.ok ? 0 : 1;
}

/** The closing sections every bench report shares: targets, failures, warnings and notes. */
export function reportTail(
  r: { targets: { target: string; subject: string; value: string; met: boolean }[]; failures: string[]; warnings: string[]; notes: string[] },
  targetsHeading: string,
): string[] {
  const out: string[] = [];
  if (r.targets.length > 0) {
    out.push(`## ${targetsHeading}`, '', '| Target | Subject | Measured | |', '|---|---|---|---|');
    for (const t of r.targets) out.push(`| ${t.target} | ${t.subject} | ${t.value} | ${t.met ? 'met' : '**missed**'} |`);
    out.push('');
  }
  if (r.failures.length > 0) out.push('## FAILURES', '', ...r.failures.map((x) => `- ${x}`), '');
  if (r.warnings.length > 0) out.push('## Warnings', '', ...r.warnings.map((x) => `- ${x}`), '');
  if (r.notes.length > 0) out.push('## Notes', '', ...r.notes.map((x) => `- ${x}`), '');
  return out;
}
