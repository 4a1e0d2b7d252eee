import Foundation

/// What one etcd member said about its raft leader.
public enum MemberSighting: Sendable, Equatable, CustomStringConvertible {
    /// The member's address refused the connection: no etcd process listens there.
    case down
    /// It answered, and knows no leader ("etcdserver: no leader").
    case leaderless
    /// It answered, and follows (or is) the leader with this member ID.
    case led(String)
    /// No clear answer (a timeout, a reset, an error): it proves nothing.
    case unknown(String)

    public var description: String {
        switch self {
        case .down: "down (connection refused)"
        case .leaderless: "no leader"
        case let .led(id): "leader \(id)"
        case let .unknown(detail): "unknown (\(detail))"
        }
    }
}

/// One look at every member of the etcd cluster, for the quorum hold (`Specs/cluster.md`, 3.3).
public struct QuorumSighting: Sendable {
    /// Each member's endpoint and what it said, in the order of the endpoints.
    public let members: [(endpoint: String, sighting: MemberSighting)]
    /// When the look began (every sighting is from after this instant).
    public let began: ContinuousClock.Instant

    public init(members: [(endpoint: String, sighting: MemberSighting)], began: ContinuousClock.Instant) {
        self.members = members
        self.began = began
    }

    /// True when no member is an etcd leader: each is down (nothing listens at its address) or
    /// answered that it knows no leader (a leader knows itself). A member that does not answer
    /// clearly proves nothing, and a partition from a working majority shows as such members.
    ///
    /// Only an etcd leader expires leases, and a member that becomes leader extends every lease
    /// by at least its TTL (etcd's lessor `Promote`). So a node that sees this before its lease
    /// runs out by its own clock knows its lease outlives ``began`` by one TTL: the leaders that
    /// were before the sighting are gone, and those after it extend the lease. No other node can
    /// take the leader key in that time.
    public var showsNoLeader: Bool {
        !members.isEmpty && members.allSatisfy { $0.sighting == .down || $0.sighting == .leaderless }
    }

    /// `http://a:1 down (connection refused), http://b:2 no leader`.
    public var summary: String { members.map { "\($0.endpoint) \($0.sighting)" }.joined(separator: ", ") }
}

/// Looks at every member of an etcd cluster, one after the other, each with a short timeout.
public struct QuorumProbe: Sendable {
    public let endpoints: [String]
    private let transport: SocketEtcdTransport

    /// - Parameter timeoutMilliseconds: per member (connect, send, receive): a member that does
    ///   not answer in time proves nothing, so a long timeout only delays the look.
    public init(endpoints: [String], timeoutMilliseconds: Int = 300) {
        self.endpoints = endpoints
        transport = SocketEtcdTransport(endpoints: endpoints, timeoutMilliseconds: timeoutMilliseconds)
    }

    public func look() -> QuorumSighting {
        let began = ContinuousClock.now
        return QuorumSighting(members: endpoints.map { ($0, transport.sighting(of: $0)) }, began: began)
    }

    /// Why `endpoints` do not name every member of the etcd cluster that `client` reaches, or
    /// `nil` when they do. The hold counts members by the endpoints: with a member missing from
    /// them, "half of the members are down" would be a guess.
    /// - Throws: ``ClusterStoreError`` when the member list cannot be read.
    public static func uncoveredMembers(endpoints: [String], client: any EtcdTransport) throws(ClusterStoreError) -> String? {
        let answer: JSONObject
        do { answer = try client.call("/v3/cluster/member/list", [:]) } catch { throw ClusterLease.wrap(error) }
        let given = Set(endpoints.map(normalized))
        let members = answer["members"] as? [JSONObject] ?? []
        guard !members.isEmpty else { return "etcd's member list is empty" }
        for member in members {
            let urls = (member["clientURLs"] as? [String] ?? []).map(normalized)
            if !urls.contains(where: given.contains) {
                return "member \(member["name"] as? String ?? "?") (\(urls.joined(separator: ","))) is not among the endpoints given"
            }
        }
        if members.count != given.count { return "\(given.count) endpoints given for \(members.count) members" }
        return nil
    }

    static func normalized(_ url: String) -> String {
        var text = url.hasSuffix("/") ? String(url.dropLast()) : url
        if text.hasPrefix("http://localhost:") { text = "http://127.0.0.1:" + text.dropFirst("http://localhost:".count) }
        return text
    }
}
