#!/usr/bin/env bash
# Regenerates the eBPF fast path's objects (internal/datapath/ebpf) from
# their C sources in a temporary directory, with the bpf2go arguments of
# its go:generate line, and fails when they differ from the committed
# ones: the committed .o and .go are what `go build` embeds, so they must
# be what the sources compile to. clang's output is byte-for-byte the same
# for the same clang and headers (checked: two runs, two clones), so the
# files are compared as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=internal/datapath/ebpf
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/bpf2go" github.com/cilium/ebpf/cmd/bpf2go
args=$(sed -n 's#^//go:generate go tool bpf2go ##p' "$pkg/gen.go")
[ -n "$args" ] || { echo "bpf-check: no bpf2go line in $pkg/gen.go" >&2; exit 1; }
mkdir "$tmp/out"
cp -r "$pkg/bpf" "$tmp/out/"
# shellcheck disable=SC2086 # the directive's words, as go generate splits them
(cd "$tmp/out" && GOPACKAGE=ebpf "$tmp/bpf2go" $args >/dev/null)
status=0
for f in "$pkg"/*_bpfel.o "$pkg"/*_bpfel.go; do
  if ! cmp -s "$f" "$tmp/out/$(basename "$f")"; then
    echo "bpf-check: $f differs from what $pkg/bpf compiles to: run go generate ./$pkg and commit the result" >&2
    status=1
  fi
done
exit $status
