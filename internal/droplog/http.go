package droplog

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Path is where flanneld serves the log (beside /metrics).
const Path = "/policy/drops"

// RateHeader carries the kernel's per-direction sampling rate, so the
// client can say the records are a sample.
const RateHeader = "X-Flannel-Drop-Log-Rate"

// Handler serves the log as JSON lines: the kept records, then with
// follow=1 every new one until the client leaves. namespace=NS keeps the
// records with a pod of NS on either side.
func (l *Log) Handler(ratePerSecond int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ns := r.URL.Query().Get("namespace")
		follow, _ := strconv.ParseBool(r.URL.Query().Get("follow"))
		w.Header().Set("Content-Type", "application/jsonl")
		w.Header().Set(RateHeader, strconv.Itoa(ratePerSecond))
		enc := json.NewEncoder(w)
		var live <-chan Record
		if follow {
			ch, cancel := l.Follow()
			defer cancel()
			live = ch
		}
		for _, rec := range l.Latest() {
			if Matches(rec, ns) {
				enc.Encode(rec)
			}
		}
		flush(w)
		for live != nil {
			select {
			case <-r.Context().Done():
				return
			case rec := <-live:
				if Matches(rec, ns) {
					enc.Encode(rec)
					flush(w)
				}
			}
		}
	})
}

func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

// Matches reports whether r concerns namespace ns (any when empty).
func Matches(r Record, ns string) bool {
	return ns == "" || r.Source.Namespace == ns || r.Dest.Namespace == ns
}
