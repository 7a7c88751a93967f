#!/bin/sh
# mk-docker-opts.sh turns flanneld's subnet.env into options for a Docker
# daemon whose containers join flannel's network: the bridge address
# (--bip), the MTU (--mtu) and, opposite to flannel's own setting,
# --ip-masq (when flannel masquerades, Docker must not do it a second time).
# Same flags and output as upstream flannel's script, so systemd units that
# use it need no change; it needs only a POSIX shell (and ip(8) for its
# route check).
#
#   -f FILE  subnet.env to read (default /run/flannel/subnet.env)
#   -d FILE  file to write (default /run/docker_opts.env)
#   -i       write each option as DOCKER_OPT_<NAME>="..."
#   -c       write all options in one variable (DOCKER_OPTS, or -k's name)
#   -k NAME  the combined variable's name; its value in the environment, if
#            any, comes first
#   -m       leave out --ip-masq
# Without -i and -c it writes both. Example output:
#   DOCKER_OPT_BIP="--bip=10.244.1.1/24"
#   DOCKER_OPT_IPMASQ="--ip-masq=false"
#   DOCKER_OPT_MTU="--mtu=1450"
#   DOCKER_OPTS=" --bip=10.244.1.1/24 --ip-masq=false --mtu=1450"
set -u

usage() {
  echo "usage: $0 [-f FLANNEL-ENV-FILE] [-d DOCKER-ENV-FILE] [-i] [-c] [-m] [-k COMBINED-KEY]" >&2
  exit 1
}

env_file=/run/flannel/subnet.env
out=/run/docker_opts.env
key=DOCKER_OPTS
each=false
combined=false
masq=true
while getopts "f:d:icmk:h" opt; do
  case $opt in
    f) env_file=$OPTARG ;;
    d) out=$OPTARG ;;
    i) each=true ;;
    c) combined=true ;;
    m) masq=false ;;
    k) key=$OPTARG ;;
    *) usage ;;
  esac
done
case $key in
  "" | [0-9]* | *[!A-Za-z0-9_]*)
    echo "$0: -k $key is not a shell variable name" >&2
    exit 1
    ;;
esac
if [ "$each" = false ] && [ "$combined" = false ]; then
  each=true
  combined=true
fi

FLANNEL_SUBNET=
FLANNEL_MTU=
FLANNEL_IPMASQ=
if [ -f "$env_file" ]; then
  . "$env_file"
fi

# network prints the network of an IPv4 address with prefix length
# (10.244.1.1/24 -> 10.244.1.0/24).
network() {
  addr=${1%/*}
  len=${1#*/}
  old_ifs=$IFS
  IFS=.
  # shellcheck disable=SC2086 # split on the dots on purpose
  set -- $addr
  IFS=$old_ifs
  n=$((($1 << 24) | ($2 << 16) | ($3 << 8) | $4))
  n=$((n & ((0xffffffff << (32 - len)) & 0xffffffff)))
  echo "$((n >> 24 & 255)).$((n >> 16 & 255)).$((n >> 8 & 255)).$((n & 255))/$len"
}

# A route to our own subnet through another host means the subnet is
# already in use elsewhere (or a stale route): Docker's bridge would be
# unreachable.
if [ -n "$FLANNEL_SUBNET" ] && command -v ip >/dev/null 2>&1; then
  net=$(network "$FLANNEL_SUBNET")
  routes=$(ip -4 route show to exact "$net" 2>/dev/null)
  case $routes in
    *" via "*)
      echo "Your routing table already contains the subnet: $routes" >&2
      exit 1
      ;;
  esac
fi

lines=
opts=
add() { # NAME VALUE
  lines="$lines$1=\"$2\"
"
  opts="$opts $2"
}
[ -n "$FLANNEL_SUBNET" ] && add DOCKER_OPT_BIP "--bip=$FLANNEL_SUBNET"
if [ -n "$FLANNEL_IPMASQ" ] && [ "$masq" = true ]; then
  case $FLANNEL_IPMASQ in
    true) add DOCKER_OPT_IPMASQ "--ip-masq=false" ;;
    false) add DOCKER_OPT_IPMASQ "--ip-masq=true" ;;
    *)
      echo "Invalid value of FLANNEL_IPMASQ: $FLANNEL_IPMASQ" >&2
      exit 1
      ;;
  esac
fi
[ -n "$FLANNEL_MTU" ] && add DOCKER_OPT_MTU "--mtu=$FLANNEL_MTU"

eval "before=\${$key:-}"
[ -n "$before" ] && before="$before "
{
  [ "$each" = true ] && printf %s "$lines"
  [ "$combined" = true ] && printf '%s="%s"\n' "$key" "$before$opts"
} >"$out" || exit 1
