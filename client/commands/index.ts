// Every command of the CLI, in the order `--help` lists them.
import type { Command } from 'commander';
import { registerDev } from './dev';
import { registerWorker } from './worker';
import { registerFleet } from './fleet';
import { registerSim } from './sim';
import { registerUpload } from './upload';
import { registerPlan } from './plan';
import { registerRollout } from './rollout';
import { registerGate } from './gate';
import { registerStatus } from './status';
import { registerSteer } from './steer';
import { registerRemove } from './remove';
import { registerList } from './list';
import { registerAudit } from './audit';
import { registerDemo } from './demo';
import { registerWeb } from './web';

export type RegisterCommand = (program: Command) => void;

export const COMMANDS: RegisterCommand[] = [
  registerDev,
  registerWorker,
  registerFleet,
  registerUpload,
  registerPlan,
  registerRollout,
  registerGate,
  registerStatus,
  registerSteer,
  registerRemove,
  registerList,
  registerAudit,
  registerWeb,
  registerDemo,
  registerSim,
];
