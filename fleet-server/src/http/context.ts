import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { RequireOperator, RequirePrincipal } from '../auth/principal.js';
import type { FleetConfig } from '../config/schema.js';
import type { Enrollment } from '../devices/enrollment.js';
import type { FleetMetrics } from '../metrics/fleet-metrics.js';
import type { Clock } from '../storage/clock.js';
import type { FleetStore } from '../storage/fleet-store.js';

/** What the REST routes need from the fleet; built by createFleet (the composition root). */
export interface HttpContext {
  config: FleetConfig;
  store: FleetStore;
  enrollment: Enrollment;
  metrics: FleetMetrics;
  log: Logger;
  clock: Clock;
  version: string;
  publicKeyPem: string;
  requirePrincipal: RequirePrincipal;
  requireOperator: RequireOperator;
  /** The URLs devices are told (MQTT broker, fleet REST); known once the fleet has started listening. */
  urls(): { mqttUrl: string; fleetUrl: string };
  /** More routes for the /api/v1 scope (the registry), registered after the fleet's own. Each enforces its own auth. */
  apiRoutes: ((api: FastifyInstance) => void | Promise<void>)[];
}
