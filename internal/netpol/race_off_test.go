//go:build !race

package netpol

const raceDetector = false
