export async function handler(context) {
  const version = await context.store.set("synced", { at: context.scheduledTime.toISOString() });
  return { job: context.job, attempt: context.attempt, version, runId: context.runId };
}
