// The live pages' event streams: one poll per rollout, shared by every viewer
// of it (300 viewers used to be 300 Temporal queries every tick), and a cap
// on streams per client and in total, answered with a 429 saying which.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { isFinalPhase } from '../domain/rollout';
import type { StatusAnswer } from '../status/read';
import { countsText } from './html';
import { ID, WebContext } from './context';

export interface StreamLimits {
  /** Open streams one client (a named person, else an address) may hold. */
  perClient: number;
  /** Open streams in all. */
  total: number;
}

export const DEFAULT_STREAM_LIMITS: StreamLimits = { perClient: 8, total: 500 };

type Listener = (data: string | null) => void;

/** One rollout's poll: its last message and everyone listening. */
interface Poll {
  listeners: Set<Listener>;
  last: string | undefined;
}

export class Streams {
  private readonly polls = new Map<string, Poll>();
  private readonly byClient = new Map<string, number>();
  private open = 0;

  constructor(
    private readonly c: Pick<WebContext, 'read' | 'pollMs'>,
    private readonly limits: StreamLimits,
  ) {}

  /** Open streams now, and rollouts being polled (for tests and the curious). */
  get counts(): { streams: number; polls: number } {
    return { streams: this.open, polls: this.polls.size };
  }

  /** Why this client may not open another stream now, or null. */
  refusal(client: string): string | null {
    if (this.open >= this.limits.total)
      return `too many live pages are open (${this.limits.total} in all): reload later`;
    if ((this.byClient.get(client) ?? 0) >= this.limits.perClient)
      return `you have ${this.limits.perClient} live pages open already: close one and reload`;
    return null;
  }

  /** GET /rollouts/:id/events: the phase and every server's state when they change, until the rollout ends. */
  async route(req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply, client: string): Promise<void> {
    const id = req.params.id;
    if (!ID.test(id)) return reply.code(404).type('text/plain').send('no such rollout\n');
    const why = this.refusal(client);
    if (why) return reply.code(429).header('retry-after', '10').type('text/plain').send(`${why}\n`);
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    this.open++;
    this.byClient.set(client, (this.byClient.get(client) ?? 0) + 1);
    let done = false;
    const listener: Listener = (data) => {
      if (done) return;
      if (data === null) return end();
      res.write(`data: ${data}\n\n`);
    };
    const end = () => {
      if (done) return;
      done = true;
      this.open--;
      const n = (this.byClient.get(client) ?? 1) - 1;
      if (n > 0) this.byClient.set(client, n);
      else this.byClient.delete(client);
      this.unsubscribe(id, listener);
      res.end();
    };
    req.raw.on('close', end);
    this.subscribe(id, listener);
  }

  private subscribe(id: string, listener: Listener): void {
    const running = this.polls.get(id);
    if (running) {
      running.listeners.add(listener);
      if (running.last !== undefined) listener(running.last);
      return;
    }
    const poll: Poll = { listeners: new Set([listener]), last: undefined };
    this.polls.set(id, poll);
    void this.run(id, poll);
  }

  private unsubscribe(id: string, listener: Listener): void {
    const poll = this.polls.get(id);
    if (!poll) return;
    poll.listeners.delete(listener);
    if (poll.listeners.size === 0) this.polls.delete(id);
  }

  /** One read per tick whoever watches; ends every stream when the rollout ends or nobody watches. */
  private async run(id: string, poll: Poll): Promise<void> {
    while (this.polls.get(id) === poll) {
      const found = await this.c.read(id).catch(() => null);
      if (found === undefined) break; // no such rollout: nothing will ever change
      if (found) {
        const data = message(found);
        if (data !== poll.last) for (const l of [...poll.listeners]) l(data);
        poll.last = data;
        if (isFinalPhase(found.status.phase) || !found.live) break;
      }
      await new Promise((r) => setTimeout(r, this.c.pollMs));
    }
    if (this.polls.get(id) === poll) this.polls.delete(id);
    for (const l of [...poll.listeners]) l(null);
  }
}

/** A large fleet's status has counts, not servers (domain/rollout.ts FULL_SERVER_LIST_MAX). */
function message(found: StatusAnswer): string {
  const st = found.status;
  return JSON.stringify(
    st.servers
      ? { phase: st.phase, servers: st.servers.map((s) => ({ name: s.name, state: s.state })) }
      : { phase: st.phase, counts: countsText(st) },
  );
}
