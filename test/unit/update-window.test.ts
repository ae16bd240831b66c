import { describe, expect, it } from 'vitest';
import { inWindow, nextWindowStart, openWindow, validateWindow } from '../../agent/src/update/window.js';

// Local times (the agent reads windows in its own time zone), so the test holds under any TZ.
const at = (d: number, h: number, m = 0, s = 0) => new Date(2024, 0, d, h, m, s); // January 2024; the 1st is a Monday
const nightly = { cron: '0 2 * * *', durationMinutes: 60 };

describe('maintenance windows', () => {
  it('no window means updates may activate at any time', () => {
    expect(inWindow(null, at(1, 13, 37))).toBe(true);
    expect(nextWindowStart(null, at(1, 13, 37))).toEqual(at(1, 13, 37));
    expect(validateWindow(null)).toBeNull();
  });

  it('is open from the fire time (inclusive) for durationMinutes (end exclusive)', () => {
    expect(inWindow(nightly, at(1, 1, 59, 59))).toBe(false);
    expect(inWindow(nightly, at(1, 2, 0, 0))).toBe(true);
    expect(inWindow(nightly, at(1, 2, 30))).toBe(true);
    expect(inWindow(nightly, at(1, 2, 59, 59))).toBe(true);
    expect(inWindow(nightly, at(1, 3, 0, 0))).toBe(false);
    expect(inWindow(nightly, at(1, 14, 0))).toBe(false);
    expect(openWindow(nightly, at(1, 2, 30))).toEqual({ start: at(1, 2), end: at(1, 3) });
  });

  it('a window that crosses midnight stays open after the date changes', () => {
    const late = { cron: '30 23 * * *', durationMinutes: 90 };
    expect(inWindow(late, at(1, 23, 29))).toBe(false);
    expect(inWindow(late, at(2, 0, 30))).toBe(true);
    expect(inWindow(late, at(2, 0, 59, 59))).toBe(true);
    expect(inWindow(late, at(2, 1, 0))).toBe(false);
  });

  it('accepts 5-field (minute precision) and 6-field (leading seconds) expressions alike', () => {
    const six = { cron: '0 0 2 * * *', durationMinutes: 60 };
    for (const now of [at(1, 1, 59, 59), at(1, 2), at(1, 2, 59, 59), at(1, 3)]) expect(inWindow(six, now)).toBe(inWindow(nightly, now));
    // The seconds field really is seconds: this window opens 30 s after 02:00.
    const secs = { cron: '30 0 2 * * *', durationMinutes: 1 };
    expect(inWindow(secs, at(1, 2, 0, 29))).toBe(false);
    expect(inWindow(secs, at(1, 2, 0, 30))).toBe(true);
    expect(validateWindow(six)).toBeNull();
    expect(validateWindow({ cron: '@daily', durationMinutes: 30 })).toBeNull();
  });

  it('honours the day-of-week field (weeknights only)', () => {
    const weeknights = { cron: '0 2 * * 1-5', durationMinutes: 60 };
    expect(inWindow(weeknights, at(5, 2, 30))).toBe(true); // Friday
    expect(inWindow(weeknights, at(6, 2, 30))).toBe(false); // Saturday
    expect(nextWindowStart(weeknights, at(6, 12))).toEqual(at(8, 2)); // Monday
  });

  it('nextWindowStart is now while open, the next fire time while closed', () => {
    expect(nextWindowStart(nightly, at(1, 2, 15))).toEqual(at(1, 2, 15));
    expect(nextWindowStart(nightly, at(1, 1))).toEqual(at(1, 2));
    expect(nextWindowStart(nightly, at(1, 3))).toEqual(at(2, 2));
  });

  it('an invalid expression is refused with a reason and never opens (fail closed)', () => {
    for (const cron of ['bad', '', '* * * *', '0 0 0 * * * * *', '60 2 * * *', '0 25 * * *', '0 2 * * 8']) {
      const w = { cron, durationMinutes: 60 };
      const reason = validateWindow(w);
      expect(reason, cron).toMatch(/maintenance window cron .* is invalid/);
      expect(inWindow(w, at(1, 2, 30)), cron).toBe(false);
      expect(nextWindowStart(w, at(1, 2, 30)), cron).toBeNull();
    }
  });

  it('refuses a duration outside 1..1440 and a window that can never fire again', () => {
    expect(validateWindow({ cron: '0 2 * * *', durationMinutes: 0 })).toMatch(/durationMinutes/);
    expect(validateWindow({ cron: '0 2 * * *', durationMinutes: 1441 })).toMatch(/durationMinutes/);
    // 7 fields: the last is the year.
    const past = { cron: '0 0 2 * * * 2020', durationMinutes: 60 };
    expect(validateWindow(past, at(1, 0))).toMatch(/never fires again/);
    expect(inWindow(past, at(1, 2, 30))).toBe(false);
    expect(nextWindowStart(past, at(1, 0))).toBeNull();
  });
});
