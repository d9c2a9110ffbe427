// The backend table: the proxy's one piece of shared state about backends, a SharedArrayBuffer
// that main and every shard map (it reaches the shards inside Engine.start's `config`, where a
// SharedArrayBuffer stays shared: docs/hooks.md, ctx.config). It never does I/O.
//
//   header   VERSION (seqlock), COUNT, BALANCE, RETRIES, CONNECT_TIMEOUT, HEALTH_INTERVAL
//   list     COUNT slot numbers, in configuration order (the balancing order)
//   slots    MAX_BACKENDS × one 64-byte line: STATE, ACTIVE, PORT, HOST_LEN
//   healthId per slot, BigInt64: the id of the health connection that may write STATE
//   downUntil per slot, Float64: ms since the epoch until which client connects avoid it
//   hosts    per slot, HOST_BYTES of ASCII host
//
// Who writes what (one writer per word, or Atomics):
//   - main writes the list, the settings and the slots' PORT/HOST under the seqlock (VERSION odd
//     while writing), and healthId; only main does, on start and on SIGHUP;
//   - the health hooks (in whichever shard owns a backend's health connection) write STATE;
//   - client hooks in every shard add to / subtract from ACTIVE (Atomics: leastconn's count)
//     and set downUntil after a failed connect (a passive mark; last writer wins, harmless);
//   - shards read the rest through a decoded snapshot that they refresh when VERSION moved.
//
// A backend keeps its slot across reloads while it stays configured (same host:port), so its
// STATE, ACTIVE and counters carry over; a removed backend's slot is reused last (see main.ts).

export const MAX_BACKENDS = 64
/** a DNS name is at most 253 characters; IPv4 literals need 15 */
export const HOST_BYTES = 256

export const BALANCES = ['roundrobin', 'leastconn', 'source'] as const
export type Balance = typeof BALANCES[number]

/** Backend STATE values. UNKNOWN (never checked yet) is eligible, like HAProxy's initial UP. */
export const UNKNOWN = 0
export const UP = 1
export const DOWN = 2
export type BackendState = typeof UNKNOWN | typeof UP | typeof DOWN
export const STATE_NAMES = ['unknown', 'up', 'down'] as const

// header words (Int32 index)
const H_VERSION = 0
const H_COUNT = 1
const H_BALANCE = 2
const H_RETRIES = 3
const H_CONNECT_TIMEOUT = 4
const H_HEALTH_INTERVAL = 5
const HEADER_WORDS = 16 // one line
const LIST_BASE = HEADER_WORDS
const SLOT_BASE = LIST_BASE + MAX_BACKENDS
const SLOT_WORDS = 16 // one 64-byte line per backend: ACTIVE is hot, keep it off its neighbours'
const S_STATE = 0
const S_ACTIVE = 1
const S_PORT = 2
const S_HOST_LEN = 3
const INT_BYTES = (SLOT_BASE + MAX_BACKENDS * SLOT_WORDS) * 4
const HEALTH_ID_OFFSET = INT_BYTES // 8-aligned: INT_BYTES is a multiple of 64
const DOWN_UNTIL_OFFSET = HEALTH_ID_OFFSET + MAX_BACKENDS * 8
const HOSTS_OFFSET = DOWN_UNTIL_OFFSET + MAX_BACKENDS * 8
export const TABLE_BYTES = HOSTS_OFFSET + MAX_BACKENDS * HOST_BYTES

/** healthId value of a slot whose backend is being (re)assigned: any health connection may write */
export const HEALTH_PENDING = 0n
/** healthId value of a free slot: nobody writes its STATE */
export const HEALTH_NONE = -1n

export interface Member { slot: number; host: string; port: number; key: string }

/** What a shard needs to pick a backend, decoded from the table once per VERSION. */
export interface Snapshot {
  version: number
  members: Member[]
  balance: Balance
  /** redispatches allowed after a failed connect (total connects = 1 + retries) */
  retries: number
  connectTimeoutMs: number
  healthIntervalMs: number
}

export interface TableSettings {
  balance: Balance
  retries: number
  connectTimeoutMs: number
  healthIntervalMs: number
}

export class BackendTable {
  readonly sab: SharedArrayBuffer
  private readonly i32: Int32Array
  private readonly healthIds: BigInt64Array
  private readonly downUntil: Float64Array
  private readonly hosts: Uint8Array

  constructor(sab: SharedArrayBuffer) {
    if (sab.byteLength !== TABLE_BYTES) throw new Error(`backend table: expected ${TABLE_BYTES} bytes, got ${sab.byteLength}`)
    this.sab = sab
    this.i32 = new Int32Array(sab, 0, INT_BYTES / 4)
    this.healthIds = new BigInt64Array(sab, HEALTH_ID_OFFSET, MAX_BACKENDS)
    this.downUntil = new Float64Array(sab, DOWN_UNTIL_OFFSET, MAX_BACKENDS)
    this.hosts = new Uint8Array(sab, HOSTS_OFFSET, MAX_BACKENDS * HOST_BYTES)
  }

  static create(): BackendTable {
    const t = new BackendTable(new SharedArrayBuffer(TABLE_BYTES))
    for (let s = 0; s < MAX_BACKENDS; s++) Atomics.store(t.healthIds, s, HEALTH_NONE)
    return t
  }

  // ---------------- main: the list and the settings (seqlock writer) ----------------

  /**
   * Publish the member list (in balancing order) and the settings. Main is the only writer:
   * VERSION goes odd, everything is written, VERSION goes even; a shard that saw VERSION change
   * (or odd) during its decode keeps its previous snapshot and tries again at its next pick.
   */
  publish(members: readonly Member[], settings: TableSettings): void {
    if (members.length > MAX_BACKENDS) throw new Error(`backend table: at most ${MAX_BACKENDS} backends`)
    const i32 = this.i32
    Atomics.add(i32, H_VERSION, 1) // odd: writing
    Atomics.store(i32, H_COUNT, members.length)
    Atomics.store(i32, H_BALANCE, BALANCES.indexOf(settings.balance))
    Atomics.store(i32, H_RETRIES, settings.retries)
    Atomics.store(i32, H_CONNECT_TIMEOUT, settings.connectTimeoutMs)
    Atomics.store(i32, H_HEALTH_INTERVAL, settings.healthIntervalMs)
    members.forEach((m, i) => {
      Atomics.store(i32, LIST_BASE + i, m.slot)
      const base = SLOT_BASE + m.slot * SLOT_WORDS
      Atomics.store(i32, base + S_PORT, m.port)
      const bytes = Buffer.from(m.host, 'latin1')
      if (bytes.length > HOST_BYTES) throw new Error(`backend table: host longer than ${HOST_BYTES} bytes`)
      this.hosts.set(bytes, m.slot * HOST_BYTES)
      Atomics.store(i32, base + S_HOST_LEN, bytes.length)
    })
    Atomics.add(i32, H_VERSION, 1) // even: consistent
  }

  /** Main, before a slot is (re)assigned: forget the previous backend's verdicts. */
  resetSlot(slot: number): void {
    Atomics.store(this.healthIds, slot, HEALTH_PENDING)
    Atomics.store(this.i32, SLOT_BASE + slot * SLOT_WORDS + S_STATE, UNKNOWN)
    this.downUntil[slot] = 0
  }

  /** Main: which health connection may write the slot's STATE (HEALTH_NONE once it is free). */
  setHealthId(slot: number, id: bigint): void { Atomics.store(this.healthIds, slot, id) }

  // ---------------- shards: the decoded snapshot ----------------

  get version(): number { return Atomics.load(this.i32, H_VERSION) }

  /** A fresh snapshot if the table changed since `prev` (null: never read), else `prev`. */
  snapshot(prev: Snapshot | null): Snapshot | null {
    const i32 = this.i32
    const v1 = Atomics.load(i32, H_VERSION)
    if (prev && prev.version === v1) return prev
    if (v1 & 1) return prev // main is writing: keep the old one this time
    const n = Atomics.load(i32, H_COUNT)
    const members: Member[] = []
    for (let i = 0; i < n && i < MAX_BACKENDS; i++) {
      const slot = Atomics.load(i32, LIST_BASE + i)
      const base = SLOT_BASE + slot * SLOT_WORDS
      const port = Atomics.load(i32, base + S_PORT)
      const len = Math.min(HOST_BYTES, Atomics.load(i32, base + S_HOST_LEN))
      const host = Buffer.from(this.hosts.buffer, this.hosts.byteOffset + slot * HOST_BYTES, len).toString('latin1')
      members.push({ slot, host, port, key: `${host}:${port}` })
    }
    const snap: Snapshot = {
      version: v1,
      members,
      balance: BALANCES[Atomics.load(i32, H_BALANCE)] ?? 'roundrobin',
      retries: Atomics.load(i32, H_RETRIES),
      connectTimeoutMs: Atomics.load(i32, H_CONNECT_TIMEOUT),
      healthIntervalMs: Atomics.load(i32, H_HEALTH_INTERVAL),
    }
    return Atomics.load(i32, H_VERSION) === v1 ? snap : prev // torn: main wrote meanwhile
  }

  // ---------------- per backend, from any thread ----------------

  state(slot: number): BackendState { return Atomics.load(this.i32, SLOT_BASE + slot * SLOT_WORDS + S_STATE) as BackendState }

  /**
   * A health hook's verdict. Only the slot's current health connection may write it (or any,
   * while main is still assigning it): a connection of a backend removed by a reload can never
   * overwrite the verdict of the backend that took its slot.
   */
  setState(slot: number, state: BackendState, healthConnId: number): boolean {
    const owner = Atomics.load(this.healthIds, slot)
    if (owner !== HEALTH_PENDING && owner !== BigInt(healthConnId)) return false
    Atomics.store(this.i32, SLOT_BASE + slot * SLOT_WORDS + S_STATE, state)
    if (state === UP) this.downUntil[slot] = 0
    return true
  }

  /** leastconn's count: upstream sockets of this backend, connecting or connected, all shards. */
  active(slot: number): number { return Atomics.load(this.i32, SLOT_BASE + slot * SLOT_WORDS + S_ACTIVE) }
  addActive(slot: number, delta: number): void { Atomics.add(this.i32, SLOT_BASE + slot * SLOT_WORDS + S_ACTIVE, delta) }

  /**
   * Passive health: a client connect to this backend failed, so new clients avoid it until
   * `until` unless nothing else is left. A plain Float64 store (any shard may write; the last
   * writer wins and every value is a sensible deadline; aligned 8-byte stores do not tear on
   * the 64-bit platforms Node supports for worker threads).
   */
  suspectUntil(slot: number): number { return this.downUntil[slot] }
  markSuspect(slot: number, until: number): void { this.downUntil[slot] = until }
}
