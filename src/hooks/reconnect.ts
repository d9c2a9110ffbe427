// The reconnect schedule of one shard: one min-heap of server connections by due time and ONE
// timer, never a timer per connection (the known trap with 10,000 connections: Tempesta #2588,
// #2599; Icinga #6517). A due connection is handed to `onDue` in batches of DUE_PER_TURN per
// timer callback so a storm is spread over loop turns. Once shut (stop), it can never be re-armed:
// `push` refuses — checked inside, not only by clearing the timer (F1, DESIGN §6).
//
// Lifetime: the connection's place in the heap (heapIdx, dueAt) belongs to its waiting state and
// is removed by `remove` on every other transition.

/** Due reconnects moved out of the heap per timer callback (a 5,000-entry pop took 36 ms). */
export const DUE_PER_TURN = 512

export interface Scheduled {
  /** when it is due (ms since epoch); set by push */
  dueAt: number
  /** index in the heap, -1 when not scheduled */
  heapIdx: number
}

export class ReconnectTimer<T extends Scheduled> {
  private readonly heap: T[] = []
  private timer: NodeJS.Timeout | null = null
  private timerAt = 0
  private shut = false
  private readonly onDue: (c: T) => void

  constructor(onDue: (c: T) => void) { this.onDue = onDue }

  get size(): number { return this.heap.length }

  /** Schedule (or reschedule) c after delayMs. Refused for good once shut. */
  push(c: T, delayMs: number): boolean {
    if (this.shut) return false
    if (c.heapIdx >= 0) this.remove(c)
    c.dueAt = Date.now() + Math.max(0, delayMs)
    c.heapIdx = this.heap.length
    this.heap.push(c)
    this.siftUp(c.heapIdx)
    this.reschedule()
    return true
  }

  remove(c: T): void {
    const i = c.heapIdx
    if (i < 0) return
    const last = this.heap.pop()!
    c.heapIdx = -1
    if (last !== c) {
      this.heap[i] = last
      last.heapIdx = i
      this.siftDown(i)
      this.siftUp(i)
    }
  }

  /** Stop: empty the heap, clear the timer, refuse every later push. */
  shutdown(): void {
    this.shut = true
    if (this.timer) { clearTimeout(this.timer); this.timer = null }
    for (const c of this.heap) c.heapIdx = -1
    this.heap.length = 0
  }

  private onTimer = (): void => {
    this.timer = null
    const now = Date.now()
    let budget = DUE_PER_TURN // the rest are still due: reschedule() fires again at once
    while (this.heap.length > 0 && this.heap[0].dueAt <= now && budget-- > 0) {
      const c = this.heap[0]
      this.remove(c)
      this.onDue(c)
    }
    this.reschedule()
  }

  private reschedule(): void {
    if (this.shut || this.heap.length === 0) {
      if (this.timer) { clearTimeout(this.timer); this.timer = null }
      return
    }
    const at = this.heap[0].dueAt
    if (this.timer && this.timerAt <= at) return
    if (this.timer) clearTimeout(this.timer)
    this.timerAt = at
    this.timer = setTimeout(this.onTimer, Math.max(0, at - Date.now()))
  }

  private siftUp(i: number): void {
    const h = this.heap
    while (i > 0) {
      const p = (i - 1) >> 1
      if (h[p].dueAt <= h[i].dueAt) break
      ;[h[p], h[i]] = [h[i], h[p]]
      h[p].heapIdx = p; h[i].heapIdx = i
      i = p
    }
  }

  private siftDown(i: number): void {
    const h = this.heap
    for (;;) {
      const l = 2 * i + 1, r = l + 1
      let m = i
      if (l < h.length && h[l].dueAt < h[m].dueAt) m = l
      if (r < h.length && h[r].dueAt < h[m].dueAt) m = r
      if (m === i) return
      ;[h[m], h[i]] = [h[i], h[m]]
      h[m].heapIdx = m; h[i].heapIdx = i
      i = m
    }
  }
}
