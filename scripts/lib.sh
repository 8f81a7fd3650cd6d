# shellcheck shell=bash
# Helpers shared by the scripts in this directory (sourced, never run):
#   source "$(dirname "$0")/lib.sh"
# Messages and errors, tool checks, TCP/HTTP waits, the pid-file helpers of `make local`, and the
# Debian installer of `make local` and `make test` (install_packages, the only function that
# changes the machine). Every function is safe under `set -euo pipefail`.

# say TEXT...: a line on stdout.
say() { printf '%s\n' "$*"; }

# step TEXT...: a "==> TEXT" heading on stderr (stdout stays free for reports).
step() { printf '\n==> %s\n' "$*" >&2; }

# fail TEXT...: "error: TEXT" on stderr, exit 1.
fail() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# disk_free [PATH]: the space left on PATH's file system (default the current directory), e.g.
# "38G free on /".
disk_free() {
  df -h --output=avail,target "${1:-.}" | awk 'NR == 2 { print $1 " free on " $2 }'
}

# have TOOL: true when TOOL is an executable file on PATH. (`command -v` alone also reports a file
# that exists but cannot be executed.)
have() {
  local path
  path=$(command -v "$1" 2>/dev/null) && [[ -f $path && -x $path ]]
}

# install_packages [--no-install-recommends] TARGET PKG...: install Debian packages as root or
# through sudo (without a password prompt, or with one on a terminal), or fail printing the one
# command that installs them; TARGET (`make local`, `make test`) is what to run again afterwards.
# PINGPONG_INSTALL=0 never installs, it only names the command. `make test` keeps recommended
# packages (debootstrap needs its recommended debian-archive-keyring); `make local` does not.
install_packages() {
  local options=() sudo=()
  if [[ $1 == --no-install-recommends ]]; then
    options=("$1")
    shift
  fi
  local target=$1
  shift
  local pkgs=("$@")
  local command="apt-get install -y ${pkgs[*]}"
  ((EUID == 0)) || command="sudo $command"
  have apt-get ||
    fail "missing: ${pkgs[*]}. This is not a Debian/Ubuntu machine: install them with your package manager, then run $target again"
  [[ ${PINGPONG_INSTALL:-auto} == 0 ]] &&
    fail "missing: ${pkgs[*]}. Install them with:  $command  (PINGPONG_INSTALL=0: not installing)"
  if ((EUID != 0)); then
    if have sudo && { sudo -n true 2>/dev/null || [[ -t 0 ]]; }; then
      sudo=(sudo)
    else
      fail "missing: ${pkgs[*]}. Install them with:  $command"
    fi
  fi
  step "installing the missing Debian packages ${pkgs[*]}: ${sudo[*]:+${sudo[*]} }apt-get install -y ${pkgs[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
    fail "apt-get update failed; install the packages yourself:  $command"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${options[@]}" "${pkgs[@]}" ||
    fail "installing ${pkgs[*]} failed; install them yourself:  $command"
}

# need TOOL HINT: fail naming HINT (how to install TOOL) unless TOOL is on PATH.
need() {
  have "$1" || fail "$1 is not installed ($2)"
}

# listening HOST PORT: true when something accepts TCP connections on HOST:PORT.
listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_port NAME HOST PORT [SECONDS=60]: wait until HOST:PORT accepts connections; on timeout print
# an error naming NAME and return 1.
wait_port() {
  local name=$1 host=$2 port=$3 seconds=${4:-60} i
  for ((i = 0; i < seconds * 10; i++)); do
    listening "$host" "$port" && return 0
    sleep 0.1
  done
  printf 'error: %s did not open %s:%s within %s s\n' "$name" "$host" "$port" "$seconds" >&2
  return 1
}

# wait_http URL [SECONDS=60] [PID]: wait until URL answers 2xx. Returns 1 on timeout, 2 as soon as
# PID (when given) has exited.
wait_http() {
  local url=$1 seconds=${2:-60} pid=${3:-} i
  for ((i = 0; i < seconds * 10; i++)); do
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then return 2; fi
    sleep 0.1
  done
  return 1
}

# find_nginx: the nginx executable, resolved through links; empty when not installed. Debian installs
# it in /usr/sbin, which is not on a normal user's PATH.
find_nginx() {
  local bin=
  if have nginx; then
    bin=$(command -v nginx)
  elif [[ -f /usr/sbin/nginx && -x /usr/sbin/nginx ]]; then
    bin=/usr/sbin/nginx
  fi
  [[ -n $bin ]] && readlink -f "$bin"
  return 0
}

# live_pid PIDFILE EXE: the pid recorded in PIDFILE when that process is alive and runs executable
# EXE; else nothing and status 1. Checking the executable protects against a recycled pid.
live_pid() {
  local pidfile=$1 exe=$2 pid path
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ && -d /proc/$pid ]] || return 1
  path=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ ${path% (deleted)} == "$exe" ]] || return 1
  printf '%s\n' "$pid"
}

# stop_pid PIDFILE SIGNAL PID NAME SECONDS: send SIGNAL to PID and wait up to SECONDS for it to
# exit, SIGKILL after that. Removes PIDFILE.
stop_pid() {
  local pidfile=$1 signal=$2 pid=$3 name=$4 wait_s=$5 i
  kill "-$signal" "$pid" 2>/dev/null || true
  for ((i = 0; i < wait_s * 10; i++)); do
    [[ -d /proc/$pid ]] || break
    sleep 0.1
  done
  if [[ -d /proc/$pid ]]; then
    say "  $name (pid $pid) did not stop within ${wait_s}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  say "  stopped $name (pid $pid)"
}
