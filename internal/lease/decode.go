package lease

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
)

// MaxValueLen bounds a lease value read from the datastore. Upstream's
// values are well under 1 KiB (a WireGuard key is the largest BackendData);
// anything longer is junk or an attack and is refused before decoding, so a
// 1 MiB value never reaches the JSON decoder, the watcher's memory or a
// backend.
const MaxValueLen = 8 << 10

// MaxKeyLen bounds a subnet key: the longest one upstream writes (dual stack,
// "255.255.255.255-32&<39 characters>-128") is under 64 characters.
const MaxKeyLen = 128

// quoteLen is how much of a refused key or value goes into a log line.
const quoteLen = 64

// DecodeValue parses a lease value as stored under <prefix>/subnets/<key>.
// Oversized values are refused without being parsed; the error quotes at
// most quoteLen bytes of the value and gives its length.
func DecodeValue(b []byte) (Attrs, error) {
	var a Attrs
	if len(b) > MaxValueLen {
		return a, fmt.Errorf("value of %d bytes is over the %d-byte limit (starts %s)", len(b), MaxValueLen, Quote(b))
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return Attrs{}, fmt.Errorf("value %s: %w", Quote(b), err)
	}
	return a, nil
}

// ParseBoundedKey is ParseKey for keys read from the datastore: an
// over-long key is refused without being parsed.
func ParseBoundedKey(key string) (v4, v6 netip.Prefix, err error) {
	if len(key) > MaxKeyLen {
		return v4, v6, fmt.Errorf("subnet key of %d bytes is over the %d-byte limit (starts %s)", len(key), MaxKeyLen, Quote([]byte(key)))
	}
	return ParseKey(key)
}

// Quote renders b for a log line: Go-quoted, cut to quoteLen bytes with the
// full length noted when longer, so one hostile value cannot flood a log.
func Quote(b []byte) string {
	if len(b) <= quoteLen {
		return strconv.Quote(string(b))
	}
	return strconv.Quote(string(b[:quoteLen])) + fmt.Sprintf("... (%d bytes)", len(b))
}
