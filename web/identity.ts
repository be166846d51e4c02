// Who is at the keyboard, their session and its CSRF token. The person is
// the one a trusted reverse proxy names in a header, believed only from one
// of the proxy's addresses, and only a person of the signers file
// (domain/people.ts), spelled as the file spells them. No person → read-only,
// saying why.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AnonymousAccess, NameMatching, personNamed } from '../domain/people';
import { NAMESPACE } from '../signing/sshsig';
import { AllowedSignersError, keysOf, peopleOf, readAllowedSigners } from '../signing/allowed-signers';
import type { Visitor } from './html';

export interface IdentityOptions {
  /** Header naming the person (lower case), e.g. x-forwarded-user. */
  identityHeader?: string;
  /** Addresses of the reverse proxy; the header is believed only from these. */
  trustedProxies?: readonly string[];
  /** The worker's signers file (KM_HOTFIX_ALLOWED_SIGNERS), read for every request: whom the page may sign for. Without it, read-only. */
  allowedSigners?: string;
  /** How the proxy's name matches the file's (KM_HOTFIX_WEB_NAMES): exact unless the proxy's names are case-insensitive. */
  names?: NameMatching;
  /** KM_HOTFIX_WEB_ANONYMOUS: `none` needs a person named by the proxy even to read (default `read`). */
  anonymous?: AnonymousAccess;
}

const PERSON = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}$/;
const COOKIE = 'kmh_session';

/** 127.0.0.1 and ::ffff:127.0.0.1 are the same peer. */
function normalAddress(a: string | undefined): string {
  return (a ?? '').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '');
}

function cookies(req: IncomingMessage): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) out.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  return out;
}

export class Identity {
  private readonly header: string;
  private readonly trusted: Set<string>;
  /** Keys the CSRF tokens: a new one per server start. */
  private readonly secret = randomBytes(32);

  constructor(private readonly o: IdentityOptions) {
    this.header = (o.identityHeader ?? 'x-forwarded-user').toLowerCase();
    this.trusted = new Set((o.trustedProxies ?? []).map(normalAddress));
  }

  private fromProxy(req: FastifyRequest): boolean {
    return this.trusted.has(normalAddress(req.socket.remoteAddress));
  }

  /** The name the proxy sends, or null: from an untrusted address, or not a plain name, nobody. */
  namedBy(req: FastifyRequest): string | null {
    if (!this.fromProxy(req)) return null;
    const v = req.headers[this.header];
    if (typeof v !== 'string') return null;
    const name = v.trim();
    return PERSON.test(name) ? name : null;
  }

  /** Why this request may not even read (KM_HOTFIX_WEB_ANONYMOUS=none and nobody named), or null. */
  readRefusal(req: FastifyRequest): string | null {
    if (this.o.anonymous !== 'none' || this.namedBy(req) !== null) return null;
    return 'this page shows rollouts only to a person named by the trusted proxy (KM_HOTFIX_WEB_ANONYMOUS=none): sign in through it';
  }

  /** Whom an event stream counts against: the person the proxy names, else the address it forwards for, else the peer. */
  clientOf(req: FastifyRequest): string {
    const named = this.namedBy(req);
    if (named !== null) return `person:${named}`;
    const forwarded = req.headers['x-forwarded-for'];
    if (this.fromProxy(req) && typeof forwarded === 'string' && forwarded.trim() !== '')
      return `address:${forwarded.split(',')[0].trim()}`;
    return `address:${normalAddress(req.socket.remoteAddress)}`;
  }

  /** Who is at the keyboard: the file's person the proxy's name is (read afresh: a deleted line counts at once), or why nobody. */
  async visitorOf(req: FastifyRequest): Promise<Visitor> {
    const named = this.namedBy(req);
    if (named === null) return { named: null, person: null, keys: [] };
    if (!this.o.allowedSigners)
      return {
        named,
        person: null,
        keys: [],
        why: 'this server has no signers file (KM_HOTFIX_ALLOWED_SIGNERS) to know people by',
      };
    let signers;
    try {
      signers = await readAllowedSigners(this.o.allowedSigners);
    } catch (err) {
      if (err instanceof AllowedSignersError) return { named, person: null, keys: [], why: err.message };
      throw err;
    }
    const now = new Date();
    const m = personNamed(named, peopleOf(signers, NAMESPACE, now), this.o.names ?? 'exact');
    if ('refused' in m) return { named, person: null, keys: [], why: m.refused };
    return { named, person: m.person, keys: keysOf(signers, m.person, NAMESPACE, now) };
  }

  /** A session id in a cookie (made on first visit); the CSRF token is derived from it. */
  session(req: FastifyRequest, reply: FastifyReply): string {
    const have = this.sessionOf(req);
    if (have && /^[A-Za-z0-9_-]{43}$/.test(have)) return have;
    const sid = randomBytes(32).toString('base64url');
    reply.header('set-cookie', `${COOKIE}=${sid}; Path=/; HttpOnly; SameSite=Strict`);
    return sid;
  }

  /** The session the request's cookie names, unchecked ('' without one). */
  sessionOf(req: FastifyRequest): string {
    return cookies(req.raw).get(COOKIE) ?? '';
  }

  tokenFor(sid: string): string {
    return createHmac('sha256', this.secret).update(sid).digest('base64url');
  }

  /** Why a state-changing request is refused as cross-site, or null. */
  crossSite(req: FastifyRequest): string | null {
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin') return `a ${String(site)} request`;
    const origin = req.headers.origin;
    if (origin !== undefined) {
      const host =
        this.fromProxy(req) && typeof req.headers['x-forwarded-host'] === 'string'
          ? req.headers['x-forwarded-host']
          : req.headers.host;
      let from: string;
      try {
        from = new URL(origin).host;
      } catch {
        return 'a request from an unreadable origin';
      }
      if (from !== host) return `a request from ${origin}`;
    }
    const sid = this.sessionOf(req);
    const body = req.body as Record<string, string> | undefined;
    const token = typeof body?.csrf === 'string' ? body.csrf : '';
    if (!sid || token.length === 0) return "a request without this page's form token";
    const want = Buffer.from(this.tokenFor(sid));
    const got = Buffer.from(token);
    if (want.length !== got.length || !timingSafeEqual(want, got)) return 'a request with a wrong form token';
    return null;
  }
}
