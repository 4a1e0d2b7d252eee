// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Snapback",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "snapbackd", targets: ["snapbackd"]),
        .executable(name: "snapback", targets: ["snapback"]),
        .executable(name: "snapback-full", targets: ["snapback-full"]),
        .library(name: "SnapbackCore", targets: ["SnapbackCore"]),
        .library(name: "SnapbackLog", targets: ["SnapbackLog"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // TLS for NBD (`--nbd-tls`): BoringSSL's PSK and X.509 server side.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
        // The cluster store's client: etcd's v3 JSON gateway over HTTP (README, "High availability").
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/adam-fowler/compress-nio", from: "1.5.0"),
        // Test-only: the end-to-end tests read Specs/openapi.yaml's constraints.
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        // The C shim: Debian's liblmdb-dev, found through pkg-config.
        .systemLibrary(
            name: "CLMDB",
            pkgConfig: "lmdb",
            providers: [.apt(["liblmdb-dev"])]
        ),
        // The pure core: domain model, decide/evolve, policy, encodings. No I/O, no clock.
        .target(name: "SnapbackCore"),
        // The write-ahead event log on LMDB.
        .target(
            name: "SnapbackLog",
            dependencies: [
                "CLMDB",
                "SnapbackCore",
                .product(name: "Crypto", package: "swift-crypto"),
                // zlib for archive segments.
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // The NBD server (fixed-newstyle handshake, transmission phase), independent of the
        // controller: it serves any `NBDExportProvider`.
        .target(
            name: "SnapbackNBD",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // The data plane's ports (block store, volume provider, durable store) and structures
        // (grain bitmaps, marks): no LMDB, no crypto.
        .target(name: "SnapbackData", dependencies: ["SnapbackCore"]),
        // The real adapters of the ports: files and block devices, the LMDB log as durable store.
        .target(name: "SnapbackAdapters", dependencies: ["SnapbackCore", "SnapbackData", "SnapbackLog"]),
        // The simulated ports: disk, volume provider, durable store and clock of one seeded world.
        .target(name: "SnapbackSimulated", dependencies: ["SnapbackCore", "SnapbackData", "SnapbackRandom"]),
        // The controller: commands, host I/O with copy-on-write, background copy, rollback,
        // recovery. The same code runs in snapbackd and in the simulator.
        .target(name: "SnapbackController", dependencies: ["SnapbackCore", "SnapbackData"]),
        // Simulated ports (disk, durable store, clock) for deterministic tests and the simulator.
        // SplitMix64, for the simulator and every randomized test.
        .target(name: "SnapbackRandom"),
        // The simulator harness: operations, reference model, invariants, scenarios.
        .target(name: "SnapbackTesting", dependencies: ["SnapbackCore", "SnapbackData", "SnapbackController", "SnapbackRandom", "SnapbackSimulated"]),
        // The control API's wire types, shared by the server and the CLI.
        .target(name: "SnapbackAPI", dependencies: ["SnapbackCore"]),
        // snapbackd's runtime: the HTTP control API on a Unix socket, NBD export of volumes, the
        // background copy loop, start-up and graceful shutdown, and `/metrics` (swift-metrics
        // objects, exposed in the Prometheus text format by swift-prometheus), and the read-only
        // status page (`--http`, rendered with swift-mustache).
        .target(
            name: "SnapbackServer",
            dependencies: [
                "SnapbackCore", "SnapbackLog", "SnapbackData", "SnapbackAdapters", "SnapbackController", "SnapbackNBD", "SnapbackAPI", "SnapbackCluster", "SnapbackClusterLog",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // The cluster log store on etcd (a second implementation of the durable-store port, fenced
        // by the leader's lease), leader election, and the standby's follower.
        // What needs no event loop: the keys, the store, the election, the log reader, and a
        // blocking socket transport (the CLI links this, not async-http-client).
        .target(name: "SnapbackClusterLog", dependencies: ["SnapbackCore", "SnapbackData", "SnapbackLog"]),
        .target(
            name: "SnapbackCluster",
            dependencies: [
                "SnapbackCore", "SnapbackData", "SnapbackLog", "SnapbackClusterLog",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // A real 3-member etcd cluster on loopback ports, for the cluster tests.
        .target(name: "EtcdTesting"),
        // The CLI's lean core, `snapback`'s fast path: the control commands parsed by hand and sent
        // as one request each, Swift standard library only (no Foundation, ArgumentParser, LMDB or
        // crypto to load at start-up); everything else (help, malformed syntax, `wait`,
        // `log ...`) is handed to snapback-full.
        .target(name: "SnapbackCLIFastPath"),
        // The complete command line (kept in a library so parsers can be tested and fuzzed).
        .target(
            name: "SnapbackCLI",
            dependencies: [
                "SnapbackCore",
                "SnapbackLog",
                "SnapbackAPI",
                "SnapbackClusterLog",
                "SnapbackCLIFastPath",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "snapbackd",
            dependencies: [
                "SnapbackServer",
                "SnapbackLog",
                "SnapbackNBD",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // `snapback`: the fast path, which execs snapback-full (installed beside it) for the rest.
        .executableTarget(
            name: "snapback",
            dependencies: ["SnapbackCLIFastPath"],
            // A static PIE on Linux (the Swift runtime, libstdc++ and glibc linked in): no dynamic
            // loader at start-up, which was two thirds of the fast path's instructions, and still
            // loaded at a random address (ASLR). lld links it through tools/ld-static-pie, which
            // drops the run path SwiftPM adds (glibc refuses one in a static PIE). Also in debug
            // builds, so the tests run the binary users get.
            linkerSettings: [
                .unsafeFlags(
                    ["-static-stdlib", "-use-ld=\(Context.packageDirectory)/tools/ld-static-pie", "-Xclang-linker", "-static-pie"],
                    .when(platforms: [.linux]))
            ]
        ),
        // The complete CLI: every command, its help and its usage errors, the audit commands.
        .executableTarget(name: "snapback-full", dependencies: ["SnapbackCLI"], path: "Sources/snapback-full"),
        // A test driver: appends events to a log as fast as asked, printing every acknowledged
        // sequence number. Used by the crash tests (SIGKILL mid-append) and by tools/bench.
        .executableTarget(
            name: "snapback-log-driver",
            dependencies: ["SnapbackCore", "SnapbackLog"],
            path: "Sources/LogDriver"
        ),
        // A benchmark driver: rollback and copy-on-write measurements on real files and a real
        // LMDB log, through the same controller code snapbackd runs (tools/bench).
        .executableTarget(
            name: "snapback-bench-driver",
            dependencies: ["SnapbackCore", "SnapbackLog", "SnapbackData", "SnapbackAdapters", "SnapbackController"],
            path: "Sources/BenchDriver"
        ),
        // The cluster store's commit figures against a real etcd (tools/bench cluster).
        .executableTarget(
            name: "snapback-cluster-bench",
            dependencies: ["SnapbackCore", "SnapbackAdapters", "SnapbackController", "SnapbackCluster", "SnapbackClusterLog", "EtcdTesting"],
            path: "Sources/ClusterBench"
        ),
        // The deterministic simulator's command line (tools/simulate).
        .executableTarget(
            name: "snapback-simulate",
            dependencies: ["SnapbackTesting", "SnapbackSimulated", "SnapbackCore", "SnapbackController", "SnapbackData"],
            path: "Sources/SimulateTool"
        ),
        .testTarget(
            name: "SimulationTests",
            dependencies: ["SnapbackTesting", "SnapbackSimulated", "SnapbackCore", "SnapbackController", "SnapbackData"]
        ),
        // The fast path agrees with the complete CLI's definitions.
        .testTarget(
            name: "SnapbackCLIFastPathTests",
            dependencies: [
                "SnapbackCLIFastPath", "SnapbackCLI", "SnapbackAPI", "SnapbackRandom",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "SnapbackCoreTests", dependencies: ["SnapbackCore", "SnapbackRandom"]),
        .testTarget(
            name: "SnapbackNBDTests",
            dependencies: [
                "SnapbackNBD", "SnapbackRandom",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // End-to-end: a real snapbackd process, the real snapback binary, real NBD clients.
        .testTarget(name: "EndToEndTests", dependencies: ["SnapbackAPI", "EtcdTesting", .product(name: "Yams", package: "Yams")]),
        // The cluster store and election against a real etcd cluster.
        .testTarget(
            name: "SnapbackClusterTests",
            dependencies: [
                "SnapbackCluster", "SnapbackClusterLog", "EtcdTesting", "SnapbackCore", "SnapbackData", "SnapbackLog", "SnapbackController",
                "SnapbackAdapters",
            ]
        ),
        .testTarget(
            name: "SnapbackDataTests",
            dependencies: [
                "SnapbackCore", "SnapbackLog", "SnapbackData", "SnapbackAdapters", "SnapbackController", "SnapbackTesting", "SnapbackSimulated",
                "SnapbackRandom",
            ]
        ),
        // The controller's pure planning, without I/O.
        .testTarget(name: "SnapbackControllerTests", dependencies: ["SnapbackController", "SnapbackCore", "SnapbackData", "SnapbackSimulated"]),
        .testTarget(
            name: "SnapbackLogTests",
            dependencies: ["SnapbackCore", "SnapbackLog", "CLMDB", "SnapbackRandom"]
        ),
    ]
)
