import EtcdTesting
import Foundation
import SnapbackAdapters
import SnapbackCluster
import SnapbackClusterLog
import SnapbackController
import SnapbackCore

/// `snapback-cluster-bench [--endpoints URL,...] [--commits N] [--clients C]`: the cluster store's
/// commit figures of `tools/bench cluster`, in one run, against a real etcd (a 3-member cluster on
/// loopback ports started here unless --endpoints names one):
///   1. a bare etcd transaction (a put compared on a key's revision) through the same client, one
///      at a time: p50 and p99;
///   2. one command (a volume rename) through the controller on the cluster store, one at a time:
///      p50 and p99, and its ratio to (1) (target: p50 ≤ 2×);
///   3. commands/s with 1 client, then with `clients` concurrent ones (group commit; target ≥ 5×).
func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}

func percentile(_ values: [Double], _ fraction: Double) -> Double {
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]
}

var endpoints: [String]?
var commits = 300
var clients = 16
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--endpoints": endpoints = arguments.popFirst().flatMap { Etcd.endpoints(parsing: $0) }
    case "--commits": commits = arguments.popFirst().flatMap { Int($0) } ?? commits
    case "--clients": clients = arguments.popFirst().flatMap { Int($0) } ?? clients
    default:
        FileHandle.standardError.write(Data("usage: snapback-cluster-bench [--endpoints URL,...] [--commits N] [--clients C]\n".utf8))
        exit(2)
    }
}

var local: LocalEtcdCluster?
if endpoints == nil {
    local = try LocalEtcdCluster(memberCount: 3)
    endpoints = local!.clientURLs
}
defer { local?.stop() }
let client = EtcdClient(endpoints: endpoints!)
let keys = ClusterKeys(cluster: "bench-\(getpid())")

// 1. Bare transactions: compare a key's mod revision, put it (what a commit does, minus the
// records and the lease comparison).
var bare: [Double] = []
var revision: Int64 = 0
let bareKey = Etcd.base64(Array((keys.prefix + "bare").utf8))
for index in 0..<commits {
    let started = ContinuousClock.now
    let answer = try client.call(
        "/v3/kv/txn",
        [
            "compare": [["key": bareKey, "target": "MOD", "result": "EQUAL", "mod_revision": String(revision)]],
            "success": [["request_put": ["key": bareKey, "value": Etcd.base64("\(index)")]]],
        ])
    bare.append(milliseconds(ContinuousClock.now - started))
    guard answer["succeeded"] as? Bool == true, let next = Etcd.int((answer["header"] as? JSONObject)?["revision"]) else {
        fatalError("a bare transaction failed: \(answer)")
    }
    revision = next
}

// 2. and 3. The controller on the cluster store, leading with a lease kept alive meanwhile.
let lease = try ClusterLease(client: client, ttlSeconds: 10)
let keepAlive = Thread {
    while lease.isValid {
        do { try lease.keepAliveOnce() } catch { FileHandle.standardError.write(Data("keep-alive: \(error)\n".utf8)) }
        Thread.sleep(forTimeInterval: 2)
    }
}
keepAlive.start()
let election = LeaderElection(client: client, keys: keys, node: "bench")
guard let term = try election.campaign(lease: lease, nowMilliseconds: 0, firstSequence: 0)?.term else { fatalError("cannot lead") }
let store = ClusterDurableStore(client: client, keys: keys)
try store.beginLeading(lease: lease, term: term)
let directory = NSTemporaryDirectory() + "snapback-cluster-bench-\(getpid())"
try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: directory) }
let controller = try Controller(
    durable: store, volumes: try FileVolumeProvider(dataDirectory: directory), clock: { Int64(Date().timeIntervalSince1970 * 1000) },
    version: "bench")
for index in 0..<clients { try controller.execute(.createVolume(name: "v\(index)-a", sizeBytes: 1 << 20, path: nil)) }

/// Client `index` renames its volume back and forth `count` times; returns each command's latency.
@Sendable func renames(_ controller: Controller, _ index: Int, count: Int) -> [Double] {
    var latencies: [Double] = []
    for round in 0..<count {
        let (from, to) = round % 2 == 0 ? ("v\(index)-a", "v\(index)-b") : ("v\(index)-b", "v\(index)-a")
        let started = ContinuousClock.now
        do {
            try controller.execute(.changeVolume(volume: from, newName: to, detect: nil, sensitivity: nil))
        } catch {
            fatalError("a rename failed: \(error)")
        }
        latencies.append(milliseconds(ContinuousClock.now - started))
    }
    return latencies
}

let single = renames(controller, 0, count: commits + commits % 2)
let oneStarted = ContinuousClock.now
_ = renames(controller, 0, count: commits - commits % 2)
let oneRate = Double(commits - commits % 2) / (milliseconds(ContinuousClock.now - oneStarted) / 1000)

let perClient = max(2, (commits / clients) * 2)
final class Counter: @unchecked Sendable {
    let lock = NSLock()
    var total = 0
}
let counter = Counter()
let manyStarted = ContinuousClock.now
let shared = controller
// One thread per client (concurrentPerform would run only as many as there are cores).
let group = DispatchGroup()
for index in 0..<clients {
    group.enter()
    Thread { [perClient] in
        let done = renames(shared, index, count: perClient).count
        counter.lock.withLock { counter.total += done }
        group.leave()
    }.start()
}
group.wait()
let manyRate = Double(counter.total) / (milliseconds(ContinuousClock.now - manyStarted) / 1000)

let bareP50 = percentile(bare, 0.5)
let commandP50 = percentile(single, 0.5)
print(String(format: "bare etcd txn: p50 %.2f ms, p99 %.2f ms (%d)", bareP50, percentile(bare, 0.99), bare.count))
print(String(format: "one command on the cluster store: p50 %.2f ms, p99 %.2f ms (%d); p50 ratio %.2fx (target <= 2x)", commandP50, percentile(single, 0.99), single.count, commandP50 / bareP50))
print(String(format: "commands/s: 1 client %.0f, %d clients %.0f: %.2fx (target >= 5x)", oneRate, clients, manyRate, manyRate / oneRate))
lease.revoke()
