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
unformatted=$(gofmt -l cmd internal test 2>/dev/null || true)
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi
echo "== unit and component tests (-race)"
go test -race -count=1 -timeout 15m $(go list ./... | grep -v /test/e2e)
echo "== end-to-end tests"
go test -count=1 -timeout 25m -v ./test/e2e/ 2>&1 | tee /tmp/flannel-e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|e2e:' || true
tail -n 3 /tmp/flannel-e2e.log
grep -q '^ok' /tmp/flannel-e2e.log
