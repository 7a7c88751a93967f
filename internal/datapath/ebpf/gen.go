package ebpf

// The programs are compiled by clang through bpf2go; the generated Go and
// object files are committed so that `go build` needs no clang.
// scripts/test.sh regenerates them and fails on a difference.
//go:generate go tool bpf2go -cc clang -target bpfel -type config -type pod fastpath bpf/fastpath.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu
