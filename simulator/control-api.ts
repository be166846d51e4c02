// Loopback HTTP control API of a running simulator (JSON):
//   GET    /servers                 every server, its services and pending faults
//   GET    /servers/:name/          one server (its direct `url` for canary checks)
//   GET    /servers/:name/log       its command log
//   DELETE /servers/:name/log       clear the log
//   POST   /servers/:name/faults    add faults (FaultSpec body)
//   DELETE /servers/:name/faults    clear its faults
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { FaultSpecError, validateFaultSpec } from './faults';
import type { SimServerImpl } from './ssh-server';

export interface ControlApi {
  url: string;
  close(): Promise<void>;
}

function describe(s: SimServerImpl) {
  return {
    ...s.inventoryEntry(),
    kmVersion: s.kmVersion(),
    services: s.services(),
    faults: s.pendingFaults(),
  };
}

export async function startControlApi(
  port: number,
  host: string,
  lookup: (name: string) => SimServerImpl | undefined,
  all: () => SimServerImpl[],
): Promise<ControlApi> {
  const server = http.createServer((req, res) => {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body) + '\n');
    };
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
      if (parts[0] !== 'servers') return send(404, { error: 'not found: use /servers' });
      if (parts.length === 1) {
        if (req.method !== 'GET') return send(405, { error: 'use GET /servers' });
        return send(200, { servers: all().map(describe) });
      }
      const s = lookup(parts[1]);
      if (!s) return send(404, { error: `no server '${parts[1]}' in this simulator (GET /servers lists them)` });
      const what = parts[2];
      if (what === undefined && req.method === 'GET') return send(200, describe(s));
      if (what === 'log' && req.method === 'GET') return send(200, { server: s.name, log: s.log() });
      if (what === 'log' && req.method === 'DELETE') {
        s.clearLog();
        return send(200, { server: s.name, log: [] });
      }
      if (what === 'faults' && req.method === 'DELETE') {
        s.clearFaults();
        return send(200, { server: s.name, faults: s.pendingFaults() });
      }
      if (what === 'faults' && req.method === 'POST') {
        let spec: unknown;
        try {
          spec = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
          validateFaultSpec(spec);
        } catch (err) {
          const why = err instanceof FaultSpecError ? err.message : 'the body must be a JSON FaultSpec object';
          return send(400, { error: why });
        }
        s.fault(spec);
        return send(200, { server: s.name, faults: s.pendingFaults() });
      }
      return send(405, { error: `unsupported: ${req.method} ${url.pathname}` });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return {
    url: `http://${host}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
