// What an operator reads in the worker's output: Temporal's activity logger,
// which adds the workflow and activity ids. Silent outside an activity (unit
// tests call activity functions directly, without a Context).
import { log } from '@temporalio/activity';
import { activityContext } from './context';

export function activityLog(level: 'info' | 'warn', message: string, attrs: Record<string, unknown> = {}): void {
  if (!activityContext()) return;
  log[level](message, attrs);
}
