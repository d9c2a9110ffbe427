// Runs in a blocking-pool thread (piscina), not in a shard: one ctx.offload task from the tasks
// module given to Engine.start({ tasks }). The answer is plain data, because an Error crossing a
// thread keeps only its message (its `code` is lost): { ok, value } or { ok: false, error }.

export interface TaskInput { module: string; name: string; input: unknown }
export type TaskOutput =
  | { ok: true; value: unknown }
  | { ok: false; error: { name: string; message: string; code?: string; stack?: string } }

export async function runTask({ module, name, input }: TaskInput): Promise<TaskOutput> {
  let fn: unknown
  try {
    const m = await import(module) as Record<string, unknown>
    fn = m[name] ?? (m.default as Record<string, unknown> | undefined)?.[name]
  } catch (e) {
    return { ok: false, error: { name: 'SyncsockError', code: 'ERR_SS_BAD_OPTION', message: `tasks module ${module} failed to load: ${(e as Error)?.message ?? e}` } }
  }
  if (typeof fn !== 'function') {
    return { ok: false, error: { name: 'SyncsockError', code: 'ERR_SS_BAD_OPTION', message: `tasks module ${module} exports no function "${name}"` } }
  }
  try {
    return { ok: true, value: await (fn as (x: unknown) => unknown)(input) }
  } catch (e) {
    const err = e as { name?: string; message?: string; code?: unknown; stack?: string }
    return {
      ok: false,
      error: { name: String(err?.name ?? 'Error'), message: String(err?.message ?? e), code: typeof err?.code === 'string' ? err.code : undefined, stack: err?.stack },
    }
  }
}
