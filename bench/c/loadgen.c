/* bench/c/loadgen.c: the load generator of bench/proxy.ts. One thread, epoll, nonblocking
 * sockets; cheap enough that the proxy under test gets the CPU (a Node load generator would take
 * the core the proxy needs).
 *
 *   loadgen connrate HOST PORT CONC WARMUP_MS DURATION_MS [MSG_BYTES]
 *       CONC workers, each in a loop: nonblocking connect -> write MSG_BYTES (64) -> read them
 *       back (checked) -> close; then the next connection. Latency = connect() call to the last
 *       byte of the echo read, per connection.
 *   loadgen pingpong HOST PORT CONNS WARMUP_MS DURATION_MS [MSG_BYTES]
 *       CONNS persistent connections (all connected first), each sends MSG_BYTES and waits for
 *       the echo (checked) before sending the next. Latency = the round trip.
 *
 * Both run WARMUP_MS unmeasured, then DURATION_MS measured, and print JSON lines on stdout:
 *   {"phase":"measure"}   when the measured window starts   (the bench samples the proxy's CPU)
 *   {"phase":"end"}       when it ends
 *   {"mode":...,"count":N,"seconds":S,"rate":N/S,"p50_us":..,"p99_us":..,"max_us":..,
 *    "errors":E,"first_error":"...","cpu_us":loadgen CPU in the window}
 * Counted: connections / messages that complete inside the window (their latency from their
 * start, which may be just before it); work in flight when the window closes is not counted. Every loop is bounded by the duration
 * (plus a 5 s connect deadline for pingpong's set-up); exit status 0 on success, 1 if the run
 * could not be done (errors go to stderr and the JSON line).
 * Compiled at bench time: cc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum { CONNECTING, WRITING, READING };

struct conn {
  int fd, state;
  size_t done; /* bytes written (WRITING) or read back (READING) of this message */
  uint64_t t0; /* ns: connect() call (connrate) or first byte sent (pingpong) */
  uint32_t seq;
  unsigned char msg[256];
};

static int connrate, msg_bytes = 64, ep;
static struct sockaddr_in dst;
static unsigned src_next; /* connrate: spread sources over 127.0.0.1-8 (more ports) */
static uint64_t t_measure, t_end;
static uint32_t *lat; static size_t nlat, caplat;
static long errors; static char first_error[200];
static volatile sig_atomic_t stop;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
static uint64_t cpu_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u + (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}
static void on_signal(int s) { (void)s; stop = 1; }

static void err(const char *what, int e) {
  errors++;
  if (!first_error[0]) snprintf(first_error, sizeof first_error, "%s: %s", what, strerror(e));
}

static void record(uint64_t t0, uint64_t t) {
  if (t < t_measure || t > t_end) return; /* completions inside the window */
  if (nlat == caplat) {
    caplat = caplat ? caplat * 2 : 1 << 16;
    uint32_t *p = realloc(lat, caplat * sizeof *lat);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    lat = p;
  }
  uint64_t us = (t - t0) / 1000;
  lat[nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static void fill_msg(struct conn *c, int id) {
  for (int i = 0; i < msg_bytes; i++) c->msg[i] = (unsigned char)(id * 131 + i * 7 + c->seq);
  memcpy(c->msg, &c->seq, 4);
}

/* Start (or restart) connection c: connrate opens a new socket. Returns -1 on failure. */
static int open_conn(struct conn *c) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) { err("socket", errno); return -1; }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connrate) {
    struct sockaddr_in src = {0};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(0x7f000001u + (src_next++ % 8));
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) { err("bind", errno); close(fd); return -1; }
  }
  c->fd = fd;
  c->state = CONNECTING;
  c->done = 0;
  c->t0 = now_ns();
  if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
    err("connect", errno);
    close(fd);
    c->fd = -1;
    return -1;
  }
  struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) { err("epoll_ctl", errno); close(fd); c->fd = -1; return -1; }
  return 0;
}

static void set_events(struct conn *c, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void close_conn(struct conn *c) {
  if (c->fd >= 0) { epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); close(c->fd); }
  c->fd = -1;
}

/* Write the rest of the message; move to READING once it is all out. -1: connection failed. */
static int do_write(struct conn *c) {
  while (c->done < (size_t)msg_bytes) {
    ssize_t n = write(c->fd, c->msg + c->done, (size_t)msg_bytes - c->done);
    if (n > 0) { c->done += (size_t)n; continue; }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) { set_events(c, EPOLLOUT); c->state = WRITING; return 0; }
    err("write", n < 0 ? errno : EPIPE);
    return -1;
  }
  c->state = READING;
  c->done = 0;
  set_events(c, EPOLLIN);
  return 0;
}

static void start_msg(struct conn *c, int id) {
  c->seq++;
  fill_msg(c, id);
  c->done = 0;
  c->t0 = now_ns();
}

/* Readable: read what is there (up to the rest of the message). 1: message complete, 0: more to
 * come, -1: failed. */
static int do_read(struct conn *c) {
  unsigned char buf[256];
  for (;;) {
    ssize_t n = read(c->fd, buf, (size_t)msg_bytes - c->done);
    if (n > 0) {
      if (memcmp(buf, c->msg + c->done, (size_t)n) != 0) { err("wrong bytes echoed", EPROTO); return -1; }
      c->done += (size_t)n;
      if (c->done == (size_t)msg_bytes) return 1;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    err(n == 0 ? "closed by the peer before the echo" : "read", n == 0 ? ECONNRESET : errno);
    return -1;
  }
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}
static uint32_t pct(double p) {
  if (!nlat) return 0;
  size_t i = (size_t)(p / 100.0 * (double)nlat + 0.999999);
  if (i > 0) i--;
  if (i >= nlat) i = nlat - 1;
  return lat[i];
}

int main(int argc, char **argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: loadgen connrate|pingpong HOST PORT CONNS WARMUP_MS DURATION_MS [MSG_BYTES]\n");
    return 2;
  }
  connrate = strcmp(argv[1], "connrate") == 0;
  if (!connrate && strcmp(argv[1], "pingpong") != 0) { fprintf(stderr, "unknown mode %s\n", argv[1]); return 2; }
  int nconn = atoi(argv[4]);
  long warm_ms = atol(argv[5]), dur_ms = atol(argv[6]);
  if (argc > 7) msg_bytes = atoi(argv[7]);
  if (nconn < 1 || nconn > 60000 || warm_ms < 0 || dur_ms < 1 || msg_bytes < 8 || msg_bytes > 256) {
    fprintf(stderr, "bad arguments\n");
    return 2;
  }
  memset(&dst, 0, sizeof dst);
  dst.sin_family = AF_INET;
  dst.sin_port = htons((unsigned short)atoi(argv[3]));
  if (inet_pton(AF_INET, argv[2], &dst.sin_addr) != 1) { fprintf(stderr, "bad host %s\n", argv[2]); return 2; }
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }

  ep = epoll_create1(EPOLL_CLOEXEC);
  struct conn *cs = calloc((size_t)nconn, sizeof *cs);
  if (ep < 0 || !cs) { perror("setup"); return 1; }
  for (int i = 0; i < nconn; i++) cs[i].fd = -1;

  uint64_t t_start = now_ns();
  t_measure = UINT64_MAX; t_end = UINT64_MAX;
  int connected = 0;
  if (!connrate) {
    /* pingpong: connect all first (bounded: 5 s), then start the clock */
    for (int i = 0; i < nconn; i++) if (open_conn(&cs[i]) < 0) goto fail_setup;
    uint64_t deadline = now_ns() + 5000000000ull;
    struct epoll_event evs[256];
    while (connected < nconn) {
      if (stop || now_ns() > deadline) { err("connect", ETIMEDOUT); goto fail_setup; }
      int n = epoll_wait(ep, evs, 256, 100);
      for (int k = 0; k < n; k++) {
        struct conn *c = evs[k].data.ptr;
        int e = 0; socklen_t el = sizeof e;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &el);
        if (e || (evs[k].events & (EPOLLERR | EPOLLHUP))) { err("connect", e ? e : ECONNREFUSED); goto fail_setup; }
        set_events(c, 0);
        connected++;
      }
    }
    t_start = now_ns();
    for (int i = 0; i < nconn; i++) {
      start_msg(&cs[i], i);
      if (do_write(&cs[i]) < 0) goto fail_setup;
    }
  } else {
    for (int i = 0; i < nconn; i++) open_conn(&cs[i]); /* a failure is retried below */
  }

  t_measure = t_start + (uint64_t)warm_ms * 1000000u;
  t_end = t_measure + (uint64_t)dur_ms * 1000000u;
  int measuring = 0;
  uint64_t cpu0 = 0, t_real_end = 0;
  long errors_before_window = 0;
  struct epoll_event evs[512];
  for (;;) {
    uint64_t t = now_ns();
    if (!measuring && t >= t_measure) {
      measuring = 1;
      errors_before_window = errors;
      cpu0 = cpu_us();
      printf("{\"phase\":\"measure\"}\n");
      fflush(stdout);
    }
    if (t >= t_end || stop) { t_real_end = t; break; }
    if (connrate) /* workers whose connect failed outright: try again (bounded by the clock) */
      for (int i = 0; i < nconn; i++) if (cs[i].fd < 0) open_conn(&cs[i]);
    uint64_t next = measuring ? t_end : t_measure;
    int timeout = (int)((next - t) / 1000000u) + 1;
    if (timeout > 100) timeout = 100;
    int n = epoll_wait(ep, evs, 512, timeout);
    if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 1; }
    for (int k = 0; k < n; k++) {
      struct conn *c = evs[k].data.ptr;
      int id = (int)(c - cs);
      int fail = 0;
      if (c->state == CONNECTING) {
        int e = 0; socklen_t el = sizeof e;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &el);
        if (e || (evs[k].events & (EPOLLERR | EPOLLHUP))) { err("connect", e ? e : ECONNREFUSED); fail = 1; }
        else { uint64_t t0 = c->t0; c->seq++; fill_msg(c, id); c->t0 = t0; c->done = 0; fail = do_write(c) < 0; }
      } else if (c->state == WRITING) {
        fail = do_write(c) < 0;
      } else {
        int r = do_read(c);
        if (r < 0) fail = 1;
        else if (r == 1) {
          record(c->t0, now_ns());
          if (connrate) { close_conn(c); open_conn(c); }
          else { start_msg(c, id); fail = do_write(c) < 0; }
        }
      }
      if (fail) {
        close_conn(c);
        if (connrate) open_conn(c);
        /* pingpong: a lost persistent connection stays lost (reported in errors) */
      }
    }
  }
  uint64_t cpu = cpu_us() - cpu0;
  printf("{\"phase\":\"end\"}\n");
  fflush(stdout);
  for (int i = 0; i < nconn; i++) close_conn(&cs[i]);
  qsort(lat, nlat, sizeof *lat, cmp_u32);
  double secs = (double)(t_real_end - t_measure) / 1e9;
  if (!measuring) secs = 0;
  printf("{\"mode\":\"%s\",\"conns\":%d,\"count\":%zu,\"seconds\":%.6f,\"rate\":%.1f,\"p50_us\":%u,\"p90_us\":%u,\"p99_us\":%u,"
         "\"p999_us\":%u,\"max_us\":%u,\"errors\":%ld,\"errors_in_window\":%ld,\"first_error\":\"%s\",\"cpu_us\":%llu}\n",
         argv[1], nconn, nlat, secs, secs > 0 ? (double)nlat / secs : 0.0, pct(50), pct(90), pct(99), pct(99.9),
         nlat ? lat[nlat - 1] : 0, errors, errors - errors_before_window, first_error, (unsigned long long)cpu);
  fflush(stdout);
  return stop ? 1 : 0;

fail_setup:
  printf("{\"mode\":\"%s\",\"conns\":%d,\"count\":0,\"connected\":%d,\"errors\":%ld,\"first_error\":\"%s\",\"setup_failed\":true}\n",
         argv[1], nconn, connected, errors, first_error);
  fflush(stdout);
  return 1;
}
