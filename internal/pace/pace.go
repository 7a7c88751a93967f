// Package pace times the daemon's loops: Backoff slows retries after
// failures, Every runs work at a fixed period. Every retry and periodic loop
// in flanneld uses one of them, so that jitter (nodes must not return to a
// recovering datastore in lockstep) and the reset after a stable spell are
// decided in one place.
package pace

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/flannelgo/flannel/internal/ctxwait"
)

// Policy says how a Backoff grows.
type Policy struct {
	Min, Max time.Duration // first wait, and the cap
	// Factor multiplies the wait after each failure; 0 means 2.
	Factor float64
	// Jitter spreads each wait by ± this fraction (0.2: 80% to 120%).
	Jitter float64
	// Stable, when set, is how long an attempt must have run for Settled
	// to start the next failure at Min again.
	Stable time.Duration
}

// Backoff hands out ever longer waits between attempts. It is not safe for
// concurrent use: each loop owns its own.
type Backoff struct {
	stable time.Duration
	exp    backoff.ExponentialBackOff
}

// New returns a Backoff whose first wait is p.Min.
func New(p Policy) *Backoff {
	factor := p.Factor
	if factor == 0 {
		factor = 2
	}
	b := &Backoff{stable: p.Stable, exp: backoff.ExponentialBackOff{
		InitialInterval:     p.Min,
		RandomizationFactor: p.Jitter,
		Multiplier:          factor,
		MaxInterval:         max(p.Max, p.Min),
	}}
	b.exp.Reset()
	return b
}

// Next returns the wait before the next attempt and grows the one after.
func (b *Backoff) Next() time.Duration { return b.exp.NextBackOff() }

// Reset starts the next failure at Min again.
func (b *Backoff) Reset() { b.exp.Reset() }

// Settled resets the back-off when the attempt that just ended ran for at
// least Stable: a watch that lived that long was healthy, and its end is a
// new failure, not the next of a series.
func (b *Backoff) Settled(ran time.Duration) {
	if b.stable > 0 && ran >= b.stable {
		b.Reset()
	}
}

// Sleep waits Next(), or less when ctx ends first; then it returns
// ctx.Err().
func (b *Backoff) Sleep(ctx context.Context) error { return ctxwait.Sleep(ctx, b.Next()) }

// Every calls fn every period until ctx ends or fn returns false. The
// first call comes one period after the start. jitter spreads each period
// by ± that fraction, so that nodes started together do not poll together.
func Every(ctx context.Context, period time.Duration, jitter float64, fn func(context.Context) bool) {
	for ctxwait.Sleep(ctx, spread(period, jitter)) == nil {
		if !fn(ctx) {
			return
		}
	}
}

func spread(d time.Duration, jitter float64) time.Duration {
	if jitter <= 0 || d <= 0 {
		return d
	}
	delta := time.Duration(jitter * float64(d))
	return d - delta + rand.N(2*delta+1)
}

// Ticker fires every period, spread by ± jitter, for loops that also wait
// on other events (a kick, a notification) and so cannot use Every. Unlike
// time.Ticker, each period is drawn anew: nodes started together drift
// apart instead of reconciling in lockstep.
type Ticker struct {
	period time.Duration
	jitter float64
	timer  *time.Timer
}

// NewTicker starts a Ticker whose first tick comes one (spread) period
// from now.
func NewTicker(period time.Duration, jitter float64) *Ticker {
	return &Ticker{period: period, jitter: jitter, timer: time.NewTimer(spread(period, jitter))}
}

// C delivers the ticks. After a tick is received, Next must be called
// for the one after it.
func (t *Ticker) C() <-chan time.Time { return t.timer.C }

// Next schedules the next tick one (spread) period from now. Calling it
// after work done for another reason postpones the tick, which is what a
// periodic safety net wants.
func (t *Ticker) Next() { t.timer.Reset(spread(t.period, t.jitter)) }

// Stop releases the timer.
func (t *Ticker) Stop() { t.timer.Stop() }
