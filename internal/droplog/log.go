package droplog

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/antispoof"
	"github.com/flannelgo/flannel/internal/netpol"
)

// ringSize is how many records `policy drops` can show without --follow.
const ringSize = 1000

// Log is the node's drop log: the latest records, the followers of new
// ones, and an optional sink that writes each as a JSON line.
type Log struct {
	node  string
	names *ModelKeeper
	sink  io.Writer // nil: none

	mu    sync.Mutex
	ports Ports // nil: anti-spoofing drops are not recorded
	ring  []Record
	next  int
	subs  map[chan Record]struct{}

	records *prometheus.CounterVec
	lost    prometheus.Counter
}

// New makes an empty log; names may be nil (addresses stay unnamed), sink
// may be nil.
func New(node string, names *ModelKeeper, sink io.Writer) *Log {
	return &Log{
		node: node, names: names, sink: sink, subs: map[chan Record]struct{}{},
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flannel_drop_log_records_total",
			Help: "Dropped packets recorded in the drop log, by reason (a rate-limited sample: exact counts are flannel_policy_dropped_packets_total and flannel_spoofed_packets_dropped_total)."}, []string{"reason"}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{Name: "flannel_drop_log_overruns_total",
			Help: "Times the kernel could not queue drop-log messages to flanneld (its socket was full): records were lost, counts were not."}),
	}
}

// Collectors are what to register.
func (l *Log) Collectors() []prometheus.Collector { return []prometheus.Collector{l.records, l.lost} }

// Run reads the group until ctx ends.
func (l *Log) Run(ctx context.Context, c *Conn) {
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	for {
		pkts, err := c.Read()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrOverrun) {
			l.lost.Inc()
			continue
		}
		if err != nil {
			klog.Errorf("policy drop log stopped: %v", err)
			return
		}
		for _, p := range pkts {
			if r, ok := l.record(p); ok {
				l.Add(r)
			}
		}
	}
}

// record turns a logged packet into a record; the prefix says which rule
// logged it.
func (l *Log) record(p Packet) (Record, bool) {
	f, err := parseFlow(p.Payload)
	if err != nil {
		klog.V(4).Infof("policy drop log: skipping a logged packet: %v", err)
		return Record{}, false
	}
	r := Record{Time: p.Time, Node: l.node, Source: Endpoint{IP: f.src}, Dest: Endpoint{IP: f.dst},
		Proto: f.proto, Port: f.port, Reason: "policy"}
	switch strings.TrimSpace(p.Prefix) {
	case netpol.LogPrefixIngress:
		r.Direction = netpol.Ingress.String()
	case netpol.LogPrefixEgress:
		r.Direction = netpol.Egress.String()
	case antispoof.LogPrefix:
		return l.spoofed(r, p.InDev)
	default:
		return Record{}, false
	}
	if l.names != nil {
		l.names.fill(&r)
	}
	return r, true
}

// Add keeps r, hands it to the followers (a slow one misses records rather
// than holding up the log) and writes it to the sink.
func (l *Log) Add(r Record) {
	l.records.WithLabelValues(r.Reason).Inc()
	l.mu.Lock()
	if len(l.ring) < ringSize {
		l.ring = append(l.ring, r)
	} else {
		l.ring[l.next] = r
	}
	l.next = (l.next + 1) % ringSize
	for ch := range l.subs {
		select {
		case ch <- r:
		default:
		}
	}
	l.mu.Unlock()
	if l.sink != nil {
		if err := json.NewEncoder(l.sink).Encode(r); err != nil {
			klog.Errorf("write policy drop record: %v", err)
		}
	}
}

// Latest returns the kept records, oldest first.
func (l *Log) Latest() []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ring) < ringSize {
		return append([]Record(nil), l.ring...)
	}
	return append(append([]Record(nil), l.ring[l.next:]...), l.ring[:l.next]...)
}

// Follow returns a channel of new records until cancel is called.
func (l *Log) Follow() (records <-chan Record, cancel func()) {
	ch := make(chan Record, 256)
	l.mu.Lock()
	l.subs[ch] = struct{}{}
	l.mu.Unlock()
	return ch, func() {
		l.mu.Lock()
		delete(l.subs, ch)
		l.mu.Unlock()
	}
}

// klogWriter writes each JSON line to flanneld's log.
type klogWriter struct{}

func (klogWriter) Write(b []byte) (int, error) {
	klog.Infof("policy drop: %s", strings.TrimSpace(string(b)))
	return len(b), nil
}

// KlogSink writes records to flanneld's log.
func KlogSink() io.Writer { return klogWriter{} }
