import Foundation

/// A node's etcd lease, kept alive by ``keepAliveOnce()``, and how long this node may still act
/// on it by its own monotonic clock.
///
/// etcd expires a lease `TTL` after the last keep-alive it received, which is after this node
/// sent it; so this node counts its lease valid until `sent + TTL - margin` by its monotonic
/// clock (which runs on while the process is stopped). Past that it must stop host I/O and
/// append nothing: etcd may already have given the leadership to another node. Appends do not
/// rely on this clock: each is an etcd transaction that compares the leader key's lease.
public final class ClusterLease: @unchecked Sendable {
    public let id: Int64
    public let ttlSeconds: Int64
    /// Subtracted from the lease's end: the longest this node may take between checking its
    /// lease and finishing the I/O it checked it for.
    public let marginMilliseconds: Int64
    private let client: any EtcdTransport
    private let lock = NSLock()
    private var validUntil: ContinuousClock.Instant
    private var lostReason: String?
    /// When the last keep-alive that etcd answered was sent.
    private var renewed: ContinuousClock.Instant
    /// Since when the lease is held on sightings of an etcd without quorum (``hold(on:)``)
    /// rather than on keep-alives; `nil` while keep-alives renew it.
    private var heldSince: ContinuousClock.Instant?

    /// Grants a lease of `ttlSeconds`.
    /// - Throws: ``ClusterStoreError/unavailable(_:)`` or ``ClusterStoreError/refused(_:)``.
    public init(client: any EtcdTransport, ttlSeconds: Int64, marginMilliseconds: Int64 = 250) throws(ClusterStoreError) {
        precondition(ttlSeconds >= 1 && marginMilliseconds >= 0 && marginMilliseconds < ttlSeconds * 1000)
        self.client = client
        self.ttlSeconds = ttlSeconds
        self.marginMilliseconds = marginMilliseconds
        let sent = ContinuousClock.now
        let answer: JSONObject
        do { answer = try client.call("/v3/lease/grant", ["TTL": String(ttlSeconds)]) } catch { throw Self.wrap(error) }
        guard let id = Etcd.int(answer["ID"]), let granted = Etcd.int(answer["TTL"]), granted > 0 else {
            throw .refused(.malformed("lease grant without an ID and a TTL: \(answer)"))
        }
        self.id = id
        validUntil = sent + .seconds(granted) - .milliseconds(marginMilliseconds)
        renewed = sent
    }

    static func wrap(_ error: EtcdError) -> ClusterStoreError {
        if case .unavailable(let detail) = error { return .unavailable(detail) }
        return .refused(error)
    }

    /// True while this node may act on the lease: not lost, and before its end by the local clock.
    public var isValid: Bool { lock.withLock { lostReason == nil && ContinuousClock.now < validUntil } }

    /// Why the lease is no longer valid, or `nil` while it is.
    public var invalidReason: String? {
        lock.withLock {
            if let lostReason { return lostReason }
            return ContinuousClock.now < validUntil ? nil : "the lease's \(ttlSeconds) s ran out without a keep-alive answered"
        }
    }

    /// How long the lease stays valid by the local clock (zero once lost).
    public var remaining: Duration {
        lock.withLock { lostReason == nil ? max(.zero, validUntil - ContinuousClock.now) : .zero }
    }

    /// Renews the lease once. A lease etcd no longer knows (expired, revoked) is lost for good.
    /// - Throws: ``ClusterStoreError``; a lost lease throws ``ClusterStoreError/notLeader(_:)``.
    public func keepAliveOnce() throws(ClusterStoreError) {
        if let reason = lock.withLock({ lostReason }) { throw .notLeader(reason) }
        let sent = ContinuousClock.now
        let answer: JSONObject
        do { answer = try client.call("/v3/lease/keepalive", ["ID": String(id)]) } catch { throw Self.wrap(error) }
        let result = answer["result"] as? JSONObject ?? answer
        guard let granted = Etcd.int(result["TTL"]), granted > 0 else {
            let reason = "etcd no longer knows lease \(id) (it expired or was revoked)"
            markLost(reason)
            throw .notLeader(reason)
        }
        lock.withLock {
            guard lostReason == nil else { return }
            validUntil = max(validUntil, sent + .seconds(granted) - .milliseconds(marginMilliseconds))
            renewed = max(renewed, sent)
            heldSince = nil
        }
    }

    /// How long ago the last keep-alive that etcd answered was sent.
    public var sinceRenewal: Duration { lock.withLock { ContinuousClock.now - renewed } }

    /// True when etcd answered a keep-alive sent after `instant`: etcd has its quorum again.
    public func renewed(after instant: ContinuousClock.Instant) -> Bool { lock.withLock { renewed > instant } }

    /// True while the lease is held on sightings of an etcd without quorum, not on keep-alives:
    /// the node may serve what needs no commit, and must send no commit (its outcome would be
    /// unknown).
    public var heldWithoutQuorum: Bool { lock.withLock { lostReason == nil && heldSince != nil && ContinuousClock.now < validUntil } }

    /// Holds the lease on `sighting` of an etcd without quorum (`Specs/cluster.md`, 3.3): while
    /// etcd has no leader nobody can expire the lease or take the leader key, and the next etcd
    /// leader extends every lease by at least its TTL; so the lease stays valid for one TTL
    /// (less the margin) from when the sighting began. Refused when the lease is lost, when it
    /// ran out before the sighting ended (etcd may have expired it before the quorum went), or
    /// when the sighting does not prove that etcd has no quorum. Returns whether it holds.
    public func hold(on sighting: QuorumSighting) -> Bool {
        guard sighting.showsNoLeader else { return false }
        return lock.withLock {
            guard lostReason == nil, ContinuousClock.now < validUntil else { return false }
            validUntil = max(validUntil, sighting.began + .seconds(ttlSeconds) - .milliseconds(marginMilliseconds))
            if heldSince == nil { heldSince = .now }
            return true
        }
    }

    /// True once etcd said it no longer knows the lease, or the node revoked it: a new lease is
    /// needed (a lease that only ran out by the local clock may still be renewed).
    public var isLost: Bool { lock.withLock { lostReason != nil } }

    /// Marks the lease lost (it is never valid again).
    public func markLost(_ reason: String) {
        lock.withLock { if lostReason == nil { lostReason = reason } }
    }

    /// Revokes the lease in etcd (its keys go at once: the leadership is free) and marks it lost.
    public func revoke() {
        markLost("the lease was revoked by this node")
        _ = try? client.call("/v3/lease/revoke", ["ID": String(id)])  // best effort: it expires anyway
    }
}
