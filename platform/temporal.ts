// The one place that turns configuration into Temporal connections (client
// and worker), so TLS, API keys and the "unreachable" error are handled once.
import { promises as fs } from 'node:fs';
import { Client, Connection, WorkflowNotFoundError } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import type { TLSConfig } from '@temporalio/common/lib/internal-non-workflow';
import type { Config } from './config';
import { UserError } from './errors';

export interface TemporalConnectionOptions {
  address: string;
  tls?: TLSConfig;
  apiKey?: string;
}

async function readPem(file: string, variable: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    throw new UserError(
      `${variable}=${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): fix the path or unset it`,
      'refused',
    );
  }
}

/** Address, TLS material and API key from the configuration (files are read here). */
export async function temporalConnectionOptions(config: Config): Promise<TemporalConnectionOptions> {
  const opts: TemporalConnectionOptions = { address: config.temporalAddress };
  if (config.temporalApiKey) opts.apiKey = config.temporalApiKey;
  if (!config.temporalTls) return opts;
  const tls: TLSConfig = {};
  if (config.temporalTlsServerName) tls.serverNameOverride = config.temporalTlsServerName;
  if (config.temporalTlsCaPath)
    tls.serverRootCACertificate = await readPem(config.temporalTlsCaPath, 'TEMPORAL_TLS_SERVER_CA_CERT_PATH');
  if (config.temporalTlsCertPath || config.temporalTlsKeyPath) {
    if (!config.temporalTlsCertPath || !config.temporalTlsKeyPath) {
      throw new UserError(
        'TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH go together: set both or neither',
        'refused',
      );
    }
    tls.clientCertPair = {
      crt: await readPem(config.temporalTlsCertPath, 'TEMPORAL_TLS_CLIENT_CERT_PATH'),
      key: await readPem(config.temporalTlsKeyPath, 'TEMPORAL_TLS_CLIENT_KEY_PATH'),
    };
  }
  opts.tls = tls;
  return opts;
}

/** The one-line error for a Temporal server that does not answer. */
export function temporalUnreachable(config: Config, err: unknown): UserError {
  const raw = (err instanceof Error ? err.message : String(err)).split('\n')[0];
  // The Rust core's errors nest the OS reason in debug output: keep only that.
  const inner = [...raw.matchAll(/message: "([^"]+)"/g)].at(-1)?.[1];
  const reason = (inner ?? raw).slice(0, 160);
  return new UserError(
    `cannot reach Temporal at ${config.temporalAddress} (${reason}): start it ('km-hotfix dev' prints the settings) or set TEMPORAL_ADDRESS${config.temporalTls ? ' and check the TLS/API key settings' : ''}`,
    'unreachable',
  );
}

export interface TemporalClient {
  client: Client;
  connection: Connection;
  close(): Promise<void>;
}

/** A workflow client for the configured namespace; exit 3 when the server does not answer. */
export async function connectClient(config: Config): Promise<TemporalClient> {
  const opts = await temporalConnectionOptions(config);
  let connection: Connection;
  try {
    connection = await Connection.connect({ ...opts, connectTimeout: 5_000 });
  } catch (err) {
    throw temporalUnreachable(config, err);
  }
  const client = new Client({ connection, namespace: config.temporalNamespace });
  return { client, connection, close: () => connection.close() };
}

/** The worker's (Rust core) connection; exit 3 when the server does not answer. */
export async function connectNativeConnection(config: Config): Promise<NativeConnection> {
  const opts = await temporalConnectionOptions(config);
  // Loaded on demand: client-only commands need not load the worker's native bridge.
  const { NativeConnection } = await import('@temporalio/worker');
  try {
    return await NativeConnection.connect(opts);
  } catch (err) {
    throw temporalUnreachable(config, err);
  }
}

/** Whether a workflow still runs; unsure (Temporal unreachable) counts as running, so a claim is kept. */
export async function workflowRunning(client: Client, workflowId: string): Promise<boolean> {
  try {
    return (await client.workflow.getHandle(workflowId).describe()).status.name === 'RUNNING';
  } catch (err) {
    return !(err instanceof WorkflowNotFoundError);
  }
}
