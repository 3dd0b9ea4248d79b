//go:build race

package hierarchy

// raceEnabled: under the race detector bcrypt is about ten times slower, so timing
// tests take fewer samples.
const raceEnabled = true
