import type { FastifyRequest } from 'fastify';
import { fail } from '../errors.js';
import type { TokenStore } from '../storage/fleet-store.js';
import type { DeviceAuthority } from './device-authority.js';
import { sha256Hex } from './operator-tokens.js';

/**
 * Who is calling the REST API. Operators send `Authorization: Bearer <token>`; devices (artifact downloads)
 * send HTTP Basic `deviceId:secret`, the same credentials they use for MQTT.
 */
export type Principal = { kind: 'operator'; tokenId: string } | { kind: 'device'; deviceId: string };

export type RequirePrincipal = (req: FastifyRequest) => Principal;
export type RequireOperator = (req: FastifyRequest) => void;

/**
 * Builds requirePrincipal: the caller's identity, or FLEET_UNAUTHORIZED. The result is remembered per request,
 * so a scope hook and a route may both ask without verifying a device secret (PBKDF2) twice.
 */
export function makeRequirePrincipal(deps: { tokens: TokenStore; authority: DeviceAuthority }): RequirePrincipal {
  const seen = new WeakMap<FastifyRequest, Principal>();
  return (req) => {
    const known = seen.get(req);
    if (known) return known;
    const principal = authenticate(req.headers.authorization, deps);
    seen.set(req, principal);
    return principal;
  };
}

/** Builds requireOperator: passes for operators, FLEET_FORBIDDEN for devices, FLEET_UNAUTHORIZED otherwise. */
export function makeRequireOperator(requirePrincipal: RequirePrincipal): RequireOperator {
  return (req) => {
    const p = requirePrincipal(req);
    if (p.kind !== 'operator') throw fail('FLEET_FORBIDDEN', `device ${p.deviceId} may not call this operator route`);
  };
}

function authenticate(header: string | undefined, deps: { tokens: TokenStore; authority: DeviceAuthority }): Principal {
  if (!header) throw fail('FLEET_UNAUTHORIZED', 'missing Authorization header: send "Bearer <operator token>" (or Basic device credentials)');
  const space = header.indexOf(' ');
  const scheme = (space < 0 ? header : header.slice(0, space)).toLowerCase();
  const value = space < 0 ? '' : header.slice(space + 1).trim();
  if (scheme === 'bearer') {
    const token = value.length > 0 && value.length <= 256 ? deps.tokens.findOperatorToken(sha256Hex(value)) : undefined;
    if (!token) throw fail('FLEET_UNAUTHORIZED', 'unknown or revoked operator token');
    return { kind: 'operator', tokenId: token.id };
  }
  if (scheme === 'basic') {
    const decoded = value.length <= 1024 ? Buffer.from(value, 'base64').toString('utf8') : '';
    const colon = decoded.indexOf(':');
    const deviceId = colon < 0 ? '' : decoded.slice(0, colon);
    if (colon < 0 || !deps.authority.verify(deviceId, decoded.slice(colon + 1))) throw fail('FLEET_UNAUTHORIZED', 'unknown device, wrong secret, or revoked device');
    return { kind: 'device', deviceId };
  }
  throw fail('FLEET_UNAUTHORIZED', `unsupported Authorization scheme ${JSON.stringify(scheme.slice(0, 20))}: use Bearer or Basic`);
}

/** requirePrincipal and requireOperator over one token store and device authority. */
export function createAuth(deps: { tokens: TokenStore; authority: DeviceAuthority }): { requirePrincipal: RequirePrincipal; requireOperator: RequireOperator } {
  const requirePrincipal = makeRequirePrincipal(deps);
  return { requirePrincipal, requireOperator: makeRequireOperator(requirePrincipal) };
}
