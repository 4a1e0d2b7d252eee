// The harness is used with the simulated ports and the seeded generator: importing
// SnapbackTesting brings both (both are declared dependencies of this target).
@_exported import SnapbackRandom
@_exported import SnapbackSimulated
