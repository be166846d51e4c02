// Every command of the CLI, in the order `--help` lists them.
import type { Command } from 'commander';
import { registerDev } from './dev';
import { registerWorker } from './worker';
import { registerFleet } from './fleet';
import { registerSim } from './sim';

export type RegisterCommand = (program: Command) => void;

export const COMMANDS: RegisterCommand[] = [
  registerDev,
  registerWorker,
  registerFleet,
  registerSim,
];
