export { createKmHotfixWorker, runWorkerUntilSignal, loadSshCredentials, openActivityDeps } from './worker';
export type { KmHotfixWorker, KmHotfixWorkerOptions, OpenedDeps } from './worker';
