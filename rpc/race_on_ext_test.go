//go:build race

package rpc_test

// raceEnabled: this test binary was built with -race.
const raceEnabled = true
