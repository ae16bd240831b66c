import { Cron } from 'croner';

/**
 * Maintenance windows: when a staged version may be activated (DESIGN §4 "Rollouts"). A window opens at each
 * fire time of a cron expression and stays open for `durationMinutes`.
 *
 * Cron syntax (croner 11, its default mode "auto", checked against the installed package):
 * - 5 fields `minute hour day-of-month month day-of-week` (classic cron; seconds are 0), e.g. `0 2 * * *`;
 * - 6 fields with a leading seconds field, e.g. `0 30 2 * * 1-5`;
 * - 7 fields with a trailing year field, e.g. `0 0 2 * * * 2030` (a window that never fires again is never open);
 * - the nicknames `@yearly @monthly @weekly @daily @hourly`.
 * Anything else (4 or 8 fields, out-of-range values such as minute 60, text) is invalid. Day-of-month and
 * day-of-week combine with OR, as in Vixie cron. Times are read in the agent process's time zone (TZ): a window
 * "at 2 am" means the box's local night, which is what an operator of a fleet across time zones wants.
 *
 * An invalid expression is never open (fail closed: an operator's typo must not let activations through at any
 * hour); the update machine reports it with validateWindow().
 */
export interface MaintenanceWindow {
  cron: string;
  /** How long the window stays open after each fire time, in minutes. */
  durationMinutes: number;
}

function parse(cron: string): Cron {
  // paused: a pattern-only job, never scheduled (no timer is created).
  return new Cron(cron, { paused: true });
}

function tryParse(cron: string): Cron | null {
  try {
    return parse(cron);
  } catch {
    return null;
  }
}

/** The open window around `now`, as [start, end), or null when closed (or the window is invalid). */
export function openWindow(w: MaintenanceWindow, now: Date): { start: Date; end: Date } | null {
  const job = tryParse(w.cron);
  if (job === null || !(w.durationMinutes > 0)) return null;
  const durationMs = w.durationMinutes * 60_000;
  // nextRun() is strictly after its argument, so this is the first fire time in (now − duration, …).
  const start = job.nextRun(new Date(now.getTime() - durationMs));
  if (start === null || start.getTime() > now.getTime()) return null;
  return { start, end: new Date(start.getTime() + durationMs) };
}

/** True when a fire time lies in (now − duration, now]; a null window means "always". */
export function inWindow(w: MaintenanceWindow | null, now: Date): boolean {
  if (w === null) return true;
  return openWindow(w, now) !== null;
}

/**
 * The earliest instant ≥ now at which activation is allowed: `now` itself when the window is open (or there is
 * none), otherwise the next fire time. Null when the expression is invalid or never fires again.
 */
export function nextWindowStart(w: MaintenanceWindow | null, now: Date): Date | null {
  if (w === null || inWindow(w, now)) return new Date(now.getTime());
  return tryParse(w.cron)?.nextRun(now) ?? null;
}

/** Null when the window is usable, otherwise the reason (croner's message for a bad expression). */
export function validateWindow(w: MaintenanceWindow | null, now: Date = new Date()): string | null {
  if (w === null) return null;
  if (!Number.isInteger(w.durationMinutes) || w.durationMinutes < 1 || w.durationMinutes > 1440) {
    return `maintenance window durationMinutes must be an integer in 1..1440, got ${String(w.durationMinutes)}`;
  }
  try {
    const job = parse(w.cron);
    if (job.nextRun(now) === null) return `maintenance window cron "${w.cron}" never fires again`;
    return null;
  } catch (err) {
    return `maintenance window cron "${w.cron}" is invalid: ${err instanceof Error ? err.message : String(err)}`;
  }
}
