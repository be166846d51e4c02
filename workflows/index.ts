// Workflows registered by the worker (bundled by webpack: deterministic code only).
export { hotfixRollout } from './rollout';
export { hotfixRemoval } from './removal';
export { hotfixUpload } from './upload';
export { serverBatches } from './batches';
