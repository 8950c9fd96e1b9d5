//go:build race

package faults

// raceEnabled: the test runs under the race detector, and builds the
// proxy with it too (which also shares the build cache of the other
// race-enabled tests).
const raceEnabled = true
