// `km-hotfix`: the command line of SPEC §4. Each command lives in
// client/commands/<name>.ts and registers itself on the program here.
import { Command, CommanderError } from 'commander';
import { CliError, EXIT, exitCodeOf } from './errors';
import { UserError } from '../platform/errors';
import { COMMANDS } from './commands';
import { inert } from '../domain/terminal';

export function buildProgram(): Command {
  const program = new Command('km-hotfix')
    .description(
      'Roll Key Manager hotfixes across a fleet the way the vendor recommends: one canary chosen by hotfix type, a human verifies it, then the rest of the fleet; any failure rolls every change back.',
    )
    .exitOverride()
    // One line, like every other error: commander's message plus where to look.
    .configureOutput({
      outputError: (str, write) => write(`km-hotfix: ${inert(str.trim().replace(/^error: /, ''))} (see --help)\n`),
    });
  for (const register of COMMANDS) register(program);
  return program;
}

/** Run the CLI; never throws: prints one line on stderr and exits with SPEC §4's code. */
export async function main(argv: string[]): Promise<void> {
  // `km-hotfix ... | head` closes the pipe early: that is not an error.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    process.exitCode = reportError(err);
  }
}

export function reportError(err: unknown): number {
  if (err instanceof CommanderError) {
    // commander already printed its message (or the help text).
    return err.exitCode === 0 ? EXIT.ok : EXIT.refused;
  }
  if (process.env.KM_HOTFIX_DEBUG) console.error(err);
  // CliError from a command, or a UserError from a lower layer: its sort decides the code.
  if (err instanceof UserError) {
    console.error(`km-hotfix: ${inert(err.message)}`);
    if (err instanceof CliError) for (const line of err.details) console.error(`  ${inert(line)}`);
    return exitCodeOf(err);
  }
  const message = err instanceof Error ? err.message : String(err);
  console.error(`km-hotfix: ${inert(message.split('\n')[0])} (set KM_HOTFIX_DEBUG=1 for details)`);
  return EXIT.failed;
}
