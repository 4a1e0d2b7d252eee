import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A real etcd cluster of `memberCount` members (Debian's `etcd-server`, installed by
/// tools/setup) on loopback ports, in a temporary directory: for the cluster store's tests and
/// the end-to-end tests of snapbackd's high availability. Members can be killed and restarted
/// one by one (quorum tests); ``stop()`` ends them all and removes the directory.
public final class LocalEtcdCluster: @unchecked Sendable {
    /// One member: its name, client and peer ports, data directory and process (nil while down).
    public struct Member: Sendable {
        public var name: String
        public var clientPort: Int
        public var peerPort: Int
        public var clientURL: String { "http://127.0.0.1:\(clientPort)" }
    }

    /// A failure to start or reach the cluster, with etcd's own last words.
    public struct StartFailure: Error, CustomStringConvertible {
        public var description: String
    }

    public static let etcdPath = "/usr/bin/etcd"
    public static let etcdctlPath = "/usr/bin/etcdctl"
    /// Whether etcd is installed (tools/setup installs it; a test without it fails, it is not skipped).
    public static var isInstalled: Bool { FileManager.default.isExecutableFile(atPath: etcdPath) }
    /// etcd's default of 128 operations per transaction is raised: a group commit carries up to
    /// this many events and bitmap parts (``ClusterDurableStore``'s bound is the same).
    public static let transactionOperationsMax = 4096
    public static let requestBytesMax = 16 << 20

    public let directory: String
    public private(set) var members: [Member] = []
    /// Given to every member after the standard arguments (e.g. `--quota-backend-bytes`).
    public let memberArguments: [String]
    private var processes: [Int: Process] = [:]
    private let lock = NSLock()

    /// Every member's client URL, comma-separated (what `--cluster etcd=` takes).
    public var endpoints: String { members.map(\.clientURL).joined(separator: ",") }
    public var clientURLs: [String] { members.map(\.clientURL) }

    /// Starts `memberCount` members, each with the standard arguments and then
    /// `memberArguments`, and waits until each answers `endpoint health`.
    /// - Throws: ``StartFailure`` when etcd is missing or the cluster is not healthy within
    ///   `timeoutSeconds`; the members started are stopped first.
    public init(memberCount: Int = 3, memberArguments: [String] = [], timeoutSeconds: Double = 30) throws {
        precondition((1...7).contains(memberCount))
        self.memberArguments = memberArguments
        guard Self.isInstalled else { throw StartFailure(description: "\(Self.etcdPath) is not installed: run tools/setup (Debian's etcd-server)") }
        directory = NSTemporaryDirectory() + "snapback-etcd-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var ports = try Self.freePorts(memberCount * 2)
        for index in 0..<memberCount {
            members.append(Member(name: "m\(index)", clientPort: ports.removeFirst(), peerPort: ports.removeFirst()))
        }
        do {
            for index in members.indices { try launch(index, initialState: "new") }
            try waitUntilHealthy(timeoutSeconds: timeoutSeconds)
        } catch {
            stop()
            throw error
        }
    }

    deinit { stop() }

    private func launch(_ index: Int, initialState: String) throws {
        let member = members[index]
        let initialCluster = members.map { "\($0.name)=http://127.0.0.1:\($0.peerPort)" }.joined(separator: ",")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.etcdPath)
        process.arguments = [
            "--name", member.name, "--data-dir", "\(directory)/\(member.name)",
            "--listen-client-urls", member.clientURL, "--advertise-client-urls", member.clientURL,
            "--listen-peer-urls", "http://127.0.0.1:\(member.peerPort)", "--initial-advertise-peer-urls", "http://127.0.0.1:\(member.peerPort)",
            "--initial-cluster", initialCluster, "--initial-cluster-state", initialState, "--initial-cluster-token", "snapback-test",
            "--max-txn-ops", "\(Self.transactionOperationsMax)", "--max-request-bytes", "\(Self.requestBytesMax)",
            // Short heartbeats: a lost member is noticed, and a new etcd leader elected, quickly.
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ] + memberArguments
        let logPath = "\(directory)/\(member.name).log"
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        lock.withLock { processes[index] = process }
    }

    /// Waits until every running member reports healthy.
    public func waitUntilHealthy(timeoutSeconds: Double = 30) throws {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        let running = lock.withLock { processes.keys.sorted() }
        let urls = running.map { members[$0].clientURL }.joined(separator: ",")
        while true {
            if Self.run(Self.etcdctlPath, ["--endpoints", urls, "--dial-timeout", "1s", "--command-timeout", "2s", "endpoint", "health"]) == 0 { return }
            for index in running where lock.withLock({ processes[index]?.isRunning == false }) {
                throw StartFailure(description: "etcd member \(members[index].name) exited: \(logTail(index))")
            }
            guard Date() < deadline else {
                throw StartFailure(description: "etcd members \(urls) not healthy after \(timeoutSeconds) s: \(logTail(running.first ?? 0))")
            }
            usleep(100_000)
        }
    }

    /// Kills member `index` with SIGKILL (its data directory stays, for ``restart(_:)``).
    public func kill(_ index: Int) {
        guard let process = lock.withLock({ processes.removeValue(forKey: index) }) else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Starts a killed member again from its data directory and waits for the cluster's health.
    public func restart(_ index: Int, timeoutSeconds: Double = 30) throws {
        guard lock.withLock({ processes[index] }) == nil else { return }
        try launch(index, initialState: "existing")
        try waitUntilHealthy(timeoutSeconds: timeoutSeconds)
    }

    /// Stops every member (SIGTERM, then SIGKILL after 5 s) and removes the directory. Idempotent.
    public func stop() {
        let running = lock.withLock { () -> [Process] in
            defer { processes.removeAll() }
            return Array(processes.values)
        }
        for process in running where process.isRunning { Glibc.kill(process.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(5)
        for process in running {
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning {
                Glibc.kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The last lines of member `index`'s log.
    public func logTail(_ index: Int, lines: Int = 5) -> String {
        let text = (try? String(contentsOfFile: "\(directory)/\(members[index].name).log", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    /// Runs `etcdctl` (API v3) with `arguments` against every running member (`--endpoints`);
    /// returns its exit status and what it printed (standard output, then standard error).
    public func etcdctl(_ arguments: [String]) -> (status: Int32, output: String) {
        let running = lock.withLock { processes.keys.sorted() }
        let urls = running.map { members[$0].clientURL }.joined(separator: ",")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.etcdctlPath)
        process.arguments = ["--endpoints", urls, "--dial-timeout", "1s", "--command-timeout", "10s"] + arguments
        process.environment = ["ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"]
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { return (-1, "cannot run \(Self.etcdctlPath): \(error)") }
        // Small outputs: read to the end (the pipes close when etcdctl exits), then reap it.
        let printed = output.fileHandleForReading.readDataToEndOfFile() + errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: printed, as: UTF8.self))
    }

    static func run(_ executable: String, _ arguments: [String]) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        process.environment = ["ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"]
        do { try process.run() } catch { return -1 }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// `count` distinct loopback ports that were free a moment ago (bound to port 0 together, so
    /// the kernel gives distinct ones).
    static func freePorts(_ count: Int) throws -> [Int] {
        var descriptors: [Int32] = []
        defer { descriptors.forEach { close($0) } }
        var ports: [Int] = []
        for _ in 0..<count {
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard descriptor >= 0 else { throw StartFailure(description: "socket: \(String(cString: strerror(errno)))") }
            descriptors.append(descriptor)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = 0
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) } }
            guard bound == 0 else { throw StartFailure(description: "bind: \(String(cString: strerror(errno)))") }
            let named = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
            }
            guard named == 0 else { throw StartFailure(description: "getsockname: \(String(cString: strerror(errno)))") }
            ports.append(Int(UInt16(bigEndian: address.sin_port)))
        }
        return ports
    }
}
