//go:build race

package netpol

// The race detector multiplies CPU time several-fold and unevenly, so the
// CPU budgets of the scale tests are held only in a build without it
// (scripts/test.sh runs them so); with it they are measured and logged.
const raceDetector = true
