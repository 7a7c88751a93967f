#!/usr/bin/env bash
# The whole test suite: set-up, static checks, unit tests and the
# end-to-end tests on network-namespace clusters. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
scripts/setup.sh

echo "== go vet"
go vet ./...
echo "== gofmt"
unformatted=$(gofmt -l cmd internal test deploy 2>/dev/null || true)
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi
echo "== unit and component tests (-race)"
go test -race -count=1 -timeout 15m $(go list ./... | grep -v /test/e2e)
echo "== fuzz tests (a few seconds each, on the seed corpus and beyond)"
go test -run '^$' -fuzz '^FuzzParseKey$' -fuzztime 5s ./internal/lease
go test -run '^$' -fuzz '^FuzzDecodeValue$' -fuzztime 5s ./internal/lease
go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 5s ./internal/subnetenv
echo "== end-to-end tests (log: /tmp/flannel-e2e.log)"
rc=0
go test -count=1 -timeout 25m -v ./test/e2e/... >/tmp/flannel-e2e.log 2>&1 || rc=$?
grep -E '^\s*(--- (PASS|FAIL|SKIP)|PASS$|FAIL|ok |panic:)|_test\.go:[0-9]+:' /tmp/flannel-e2e.log || true
if [ "$rc" -ne 0 ]; then
  echo "end-to-end tests failed (exit $rc); the full log is /tmp/flannel-e2e.log"
fi
exit "$rc"
