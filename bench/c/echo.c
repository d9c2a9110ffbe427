/* bench/c/echo.c: the echo backend of bench/proxy.ts. One thread, epoll (level-triggered),
 * any number of connections; echoes every byte back, honouring partial writes (a connection
 * whose echo is not all written stops reading until it is: backpressure, bounded memory).
 *
 *   echo [PORT] [HOST]        PORT 0 (default): the kernel picks; HOST default 127.0.0.1
 *
 * Prints one JSON line {"listening":{"host":"...","port":N},"pid":N} once it listens, then
 * serves until SIGTERM/SIGINT (exit 0). Compiled at bench time: cc -O2 -o echo echo.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 65536

struct conn { int fd; size_t off, len; char buf[BUF]; };

static volatile sig_atomic_t stop;
static void on_signal(int s) { (void)s; stop = 1; }

static void die(const char *what) { perror(what); exit(1); }

static void drop(int ep, struct conn *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c);
}

/* Write what is pending; returns -1 on a fatal error, else 0 (c->off == c->len when done). */
static int flush(struct conn *c) {
  while (c->off < c->len) {
    ssize_t n = write(c->fd, c->buf + c->off, c->len - c->off);
    if (n > 0) { c->off += (size_t)n; continue; }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    return -1;
  }
  c->off = c->len = 0;
  return 0;
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 0;
  const char *host = argc > 2 ? argv[2] : "127.0.0.1";
  struct sigaction sa = {0};
  sa.sa_handler = on_signal; /* no SA_RESTART: epoll_wait returns EINTR */
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) { fprintf(stderr, "bad host %s\n", host); return 1; }
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (listen(lfd, 4096) < 0) die("listen");
  socklen_t al = sizeof a;
  getsockname(lfd, (struct sockaddr *)&a, &al);

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) die("epoll_ctl");
  printf("{\"listening\":{\"host\":\"%s\",\"port\":%d},\"pid\":%d}\n", host, ntohs(a.sin_port), (int)getpid());
  fflush(stdout);

  struct epoll_event evs[256];
  while (!stop) {
    int n = epoll_wait(ep, evs, 256, 1000);
    if (n < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (c == NULL) { /* listener: accept everything that is there */
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) perror("accept4"); /* EMFILE: try again later */
            break;
          }
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct conn *nc = malloc(sizeof *nc);
          if (!nc) { close(fd); continue; }
          nc->fd = fd; nc->off = nc->len = 0;
          struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = nc};
          if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev) < 0) { close(fd); free(nc); }
        }
        continue;
      }
      if (evs[i].events & EPOLLERR) { drop(ep, c); continue; }
      if (c->len > 0) { /* waiting for EPOLLOUT: finish the pending echo, then read again */
        if (flush(c) < 0) { drop(ep, c); continue; }
        if (c->len == 0) {
          struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
          epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
        }
        continue;
      }
      /* readable (or hang-up): one read per wake-up keeps connections fair */
      ssize_t r = read(c->fd, c->buf, BUF);
      if (r == 0) { drop(ep, c); continue; } /* peer closed: close too */
      if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
        drop(ep, c);
        continue;
      }
      c->off = 0; c->len = (size_t)r;
      if (flush(c) < 0) { drop(ep, c); continue; }
      if (c->len > 0) { /* partial write: stop reading until the echo is out */
        struct epoll_event cev = {.events = EPOLLOUT, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
      }
    }
  }
  return 0;
}
