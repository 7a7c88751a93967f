package lease

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
)

// Digest hashes a's fields with seed. A subnet manager keeps it per lease
// instead of the attributes, to tell whether a lease changed since it was
// sent: two attributes with one digest are taken as equal (a chance of
// 2^-64 per comparison). The attributes themselves live once, in the
// daemon's lease set.
func (a Attrs) Digest(seed maphash.Seed) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	for _, ip := range []netip.Addr{a.PublicIP, a.PublicIPv6} {
		b, _ := ip.MarshalBinary()
		h.WriteByte(byte(len(b)))
		h.Write(b)
	}
	for _, f := range [][]byte{[]byte(a.BackendType), a.BackendData, a.BackendV6Data} {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	return h.Sum64()
}
