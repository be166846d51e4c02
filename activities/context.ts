// The running activity's Context, for code that also runs outside one: unit
// tests call steps, logs and failures directly, where Context.current()
// throws.
import { Context } from '@temporalio/activity';

/** The running activity's context, or undefined outside an activity. */
export function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}
