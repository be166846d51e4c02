// Configuration from the environment, with Temporal's own variables where they exist.

export interface Config {
  temporalAddress: string;
  temporalNamespace: string;
  taskQueue: string;
  databaseUrl?: string;
  kmDatabaseUrl?: string;
  sshKeyPath?: string;
  sshAgent?: string;
  /** The worker's trust root for signed decisions: an OpenSSH allowed_signers file (SPEC §7). */
  allowedSigners?: string;
  /** The person's private key for signing decisions; else the ssh-agent. */
  signingKey?: string;
  /** The web page (web/): its own signing key (a delegate in allowed_signers), whom it trusts to name people, and where it is. */
  web: {
    signingKey?: string;
    identityHeader: string;
    trustedProxies: string[];
    /** KM_HOTFIX_WEB_NAMES as given (exact | case-insensitive); domain/people.ts parses it. */
    names?: string;
    /** The page's public address, for links in notifications. */
    url?: string;
  };
  /** A Slack-compatible webhook told when a rollout waits, completes, rolls back or fails to. */
  webhookUrl?: string;
  /** TLS and API key, read by Temporal's envconfig conventions. */
  temporalApiKey?: string;
  temporalTls: boolean;
  temporalTlsCertPath?: string;
  temporalTlsKeyPath?: string;
  temporalTlsCaPath?: string;
  temporalTlsServerName?: string;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const apiKey = env.TEMPORAL_API_KEY || undefined;
  const certPath = env.TEMPORAL_TLS_CLIENT_CERT_PATH || undefined;
  const tlsFlag = (env.TEMPORAL_TLS ?? '').toLowerCase();
  return {
    temporalAddress: env.TEMPORAL_ADDRESS || 'localhost:7233',
    temporalNamespace: env.TEMPORAL_NAMESPACE || 'default',
    taskQueue: env.KM_HOTFIX_TASK_QUEUE || 'km-hotfix',
    databaseUrl: env.DATABASE_URL || undefined,
    kmDatabaseUrl: env.KM_DATABASE_URL || undefined,
    sshKeyPath: env.KM_SSH_KEY || undefined,
    sshAgent: env.SSH_AUTH_SOCK || undefined,
    allowedSigners: env.KM_HOTFIX_ALLOWED_SIGNERS || undefined,
    signingKey: env.KM_HOTFIX_SIGNING_KEY || undefined,
    web: {
      signingKey: env.KM_HOTFIX_WEB_SIGNING_KEY || undefined,
      identityHeader: (env.KM_HOTFIX_WEB_IDENTITY_HEADER || 'X-Forwarded-User').toLowerCase(),
      trustedProxies: (env.KM_HOTFIX_WEB_TRUSTED_PROXIES ?? '')
        .split(',')
        .map((a) => a.trim())
        .filter((a) => a !== ''),
      names: env.KM_HOTFIX_WEB_NAMES || undefined,
      url: env.KM_HOTFIX_WEB_URL || undefined,
    },
    webhookUrl: env.KM_HOTFIX_WEBHOOK_URL || undefined,
    temporalApiKey: apiKey,
    // An API key or a client certificate implies TLS, as Temporal's own tools do.
    temporalTls: tlsFlag === 'true' || tlsFlag === '1' || (tlsFlag !== 'false' && (!!apiKey || !!certPath)),
    temporalTlsCertPath: certPath,
    temporalTlsKeyPath: env.TEMPORAL_TLS_CLIENT_KEY_PATH || undefined,
    temporalTlsCaPath: env.TEMPORAL_TLS_SERVER_CA_CERT_PATH || undefined,
    temporalTlsServerName: env.TEMPORAL_TLS_SERVER_NAME || undefined,
  };
}
