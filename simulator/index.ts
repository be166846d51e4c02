// The Key Manager simulator: a fleet of real SSH servers (ssh2 Server) on
// loopback that behave as SPEC §1-§2 describe, share one Key Manager
// database, and can be told to fail. PUBLIC API — tests, `km-hotfix dev
// --sim`, `km-hotfix sim`, the demo and the benchmarks use only this.
// Nothing in simulator/ imports it: it only gathers what they may use.
export type { CommandLogEntry, FaultCommand, FaultSpec, SimFleet, SimFleetOptions, SimServer } from './types';
export { startSimFleet, SimConfigError } from './fleet';
export { installedChecksum, readManifest } from './hotfix-file';
export { validateFaultSpec, FaultSpecError } from './faults';
export { parseWords, shellQuote } from './shell';
export { makeHotfix } from './hotfix-file';
export type { MakeHotfixOptions, HotfixManifest } from './hotfix-file';
