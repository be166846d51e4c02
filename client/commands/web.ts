// `km-hotfix web [--port N]`: the approvers' page (web/) for the configured
// Temporal and orchestrator database. This command only wires it.
import { Command, InvalidArgumentError } from 'commander';
import { loadConfig } from '../../platform/config';
import { connectClient } from '../../platform/temporal';
import { connectOrchestrator } from '../../store/database';
import { SigningKeyError } from '../../signing/signer';
import { CliError, EXIT } from '../errors';
import { NameMatching, NameMatchingError, parseNameMatching } from '../../domain/people';

function port(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 0 || n > 65535)
    throw new InvalidArgumentError('--port must be a port number from 0 to 65535');
  return n;
}

export function registerWeb(program: Command): void {
  program
    .command('web')
    .summary("serve the approvers' web page: rollouts, a live grid of servers, Approve / Reject")
    .description(
      `Serve the approvers' page over the configured Temporal and orchestrator database (DATABASE_URL).
A person is named by a trusted reverse proxy: the header KM_HOTFIX_WEB_IDENTITY_HEADER (default X-Forwarded-User), believed only from KM_HOTFIX_WEB_TRUSTED_PROXIES (comma-separated addresses). Only a person of the signers file KM_HOTFIX_ALLOWED_SIGNERS (the worker's) may decide, by the name the file gives them: the proxy's name must match it exactly, or, with KM_HOTFIX_WEB_NAMES=case-insensitive, in any case when only one person of the file matches. Decisions are signed with KM_HOTFIX_WEB_SIGNING_KEY, a delegate key in the worker's allowed_signers (a principal ending in @delegate), for that person. Without a named person, the signers file or the key, the page is read-only.`,
    )
    .option('--port <n>', 'port to listen on (0: any free one)', port, 8080)
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .addHelpText(
      'after',
      `
Example:
  KM_HOTFIX_WEB_SIGNING_KEY=/etc/km-hotfix/web_ed25519 KM_HOTFIX_WEB_TRUSTED_PROXIES=127.0.0.1,::1 km-hotfix web --port 8080`,
    )
    .action(async (o: { port: number; host: string }) => {
      const cfg = loadConfig();
      let names: NameMatching;
      try {
        names = parseNameMatching(cfg.web.names);
      } catch (err) {
        if (err instanceof NameMatchingError) throw new CliError(err.message, EXIT.refused);
        throw err;
      }
      const { startWebServer } = await import('../../web/server');
      const sql = await connectOrchestrator(cfg);
      const temporal = await connectClient(cfg);
      let web;
      try {
        web = await startWebServer({
          client: temporal.client,
          orchestrator: sql,
          port: o.port,
          host: o.host,
          identityHeader: cfg.web.identityHeader,
          trustedProxies: cfg.web.trustedProxies,
          signingKey: cfg.web.signingKey,
          ...(cfg.allowedSigners ? { allowedSigners: cfg.allowedSigners } : {}),
          names,
        });
      } catch (err) {
        await temporal.close().catch(() => undefined);
        await sql.end({ timeout: 1 }).catch(() => undefined);
        if (err instanceof SigningKeyError)
          throw new CliError(`KM_HOTFIX_WEB_SIGNING_KEY: ${err.message}`, EXIT.refused);
        if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE')
          throw new CliError(`port ${o.port} is already in use: pass --port with a free one`, EXIT.refused);
        throw err;
      }
      const readOnly = !cfg.web.signingKey
        ? ' (read-only: no KM_HOTFIX_WEB_SIGNING_KEY)'
        : !cfg.allowedSigners
          ? ' (read-only: no KM_HOTFIX_ALLOWED_SIGNERS to know people by)'
          : '';
      process.stderr.write(`km-hotfix web: ${web.url}${readOnly}; Ctrl-C stops it\n`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
      await web.close();
      await temporal.close().catch(() => undefined);
      await sql.end({ timeout: 5 }).catch(() => undefined);
    });
}
