#!/bin/sh
# bench/peers-setup.sh: install what bench/proxy.ts compares against, from the OS packages
# (Debian/Ubuntu apt): haproxy, nginx with the stream module, iperf3, and a C compiler for the
# bench's small epoll programs (bench/c/*.c).
#
#   sh bench/peers-setup.sh            # as root (or with sudo available)
#
# Idempotent: what is already there is left alone. Never fails: a peer that cannot be installed
# is reported and the script still exits 0 (bench/proxy.ts then skips that peer and says so).
# It does not start any system service: apt is told not to (policy-rc.d exit 101 for the
# duration of the install), and any haproxy/nginx service that started anyway is stopped. The
# bench runs each peer itself, in the foreground, with its own config in a temp dir.

log() { echo "peers-setup: $*"; }

have_stream_module() {
  # Debian's dynamic module, or an nginx built with the stream module in (nginx -V lists it)
  [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] && return 0
  command -v nginx >/dev/null 2>&1 && nginx -V 2>&1 | grep -q -- '--with-stream\b' \
    && ! nginx -V 2>&1 | grep -q -- '--with-stream=dynamic' && return 0
  return 1
}

missing=""
command -v haproxy >/dev/null 2>&1 || missing="$missing haproxy"
if ! command -v nginx >/dev/null 2>&1 || ! have_stream_module; then missing="$missing nginx"; fi
command -v iperf3 >/dev/null 2>&1 || missing="$missing iperf3"
command -v cc >/dev/null 2>&1 || missing="$missing cc"

if [ -z "$missing" ]; then
  log "all present: $(haproxy -v 2>/dev/null | head -1); $(nginx -v 2>&1); $(iperf3 --version 2>/dev/null | head -1); $(cc --version 2>/dev/null | head -1)"
  exit 0
fi
log "missing:$missing"

if ! command -v apt-get >/dev/null 2>&1; then
  log "no apt-get on this system: install$missing by hand (nginx needs its stream module); the bench skips what is missing"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"
  else
    log "not root and no password-less sudo: cannot install$missing; the bench skips what is missing"
    exit 0
  fi
fi

# Package names for what is missing. nginx: the light 'nginx' plus 'libnginx-mod-stream' when the
# archive has it (Debian 12+, Ubuntu 22.04+), else nginx-full (older releases build stream in).
pkgs=""
apt_has() { apt-cache show "$1" >/dev/null 2>&1; }
for m in $missing; do
  case $m in
    haproxy) pkgs="$pkgs haproxy" ;;
    iperf3) pkgs="$pkgs iperf3" ;;
    cc) pkgs="$pkgs gcc libc6-dev" ;;
    nginx) pkgs="$pkgs NGINX" ;;
  esac
done

log "apt-get update"
$SUDO apt-get update -qq >/dev/null 2>&1 || log "apt-get update failed (continuing with the lists there are)"
case $pkgs in
  *NGINX*)
    if apt_has libnginx-mod-stream; then ng="nginx libnginx-mod-stream"
    elif apt_has nginx-full; then ng="nginx-full"
    elif apt_has nginx-extras; then ng="nginx-extras"
    else ng=""; log "no nginx package with the stream module in the apt lists: nginx stream is skipped"; fi
    pkgs=$(echo "$pkgs" | sed "s/NGINX/$ng/")
    ;;
esac

# Do not let the packages start their services: policy-rc.d exit 101 while installing. Keep an
# existing policy-rc.d as it was.
POLICY=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$POLICY" ]; then
  if printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null 2>&1 && $SUDO chmod 755 "$POLICY"; then made_policy=1; fi
fi

# One package at a time, so one that fails does not take the others with it.
for p in $pkgs; do
  if dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed'; then continue; fi
  log "installing $p"
  if DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
       -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$p" >/tmp/peers-setup-apt.log 2>&1; then
    log "installed $p"
  else
    log "could not install $p (tail of the apt log follows); the bench skips what needs it"
    tail -5 /tmp/peers-setup-apt.log | sed 's/^/    /'
  fi
done

[ "$made_policy" = 1 ] && $SUDO rm -f "$POLICY"

# Belt and braces: if a service got started anyway (no policy-rc.d honoured), stop it, so the
# bench's peers are the only ones running and no system service holds port 80.
for svc in haproxy nginx iperf3; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $SUDO systemctl stop "$svc" >/dev/null 2>&1 && log "stopped the $svc system service"
  elif command -v service >/dev/null 2>&1 && [ -e "/etc/init.d/$svc" ] && service "$svc" status >/dev/null 2>&1; then
    $SUDO service "$svc" stop >/dev/null 2>&1 && log "stopped the $svc system service"
  fi
done

command -v haproxy >/dev/null 2>&1 && log "haproxy: $(haproxy -v 2>/dev/null | head -1)" || log "haproxy: not available"
if command -v nginx >/dev/null 2>&1 && have_stream_module; then log "nginx: $(nginx -v 2>&1) with the stream module"
else log "nginx stream: not available"; fi
command -v iperf3 >/dev/null 2>&1 && log "iperf3: $(iperf3 --version 2>/dev/null | head -1)" || log "iperf3: not available (bulk is skipped)"
command -v cc >/dev/null 2>&1 && log "cc: $(cc --version 2>/dev/null | head -1)" || log "cc: not available (the bench cannot run without it)"
exit 0
