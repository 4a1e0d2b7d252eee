/// Values the durable store gives back: receipts of appends and events as stored. Pure values,
/// so that ports and their implementations (LMDB, simulated, a cluster store) share them.

/// The acknowledgement of an append: the sequence numbers given to its events.
public struct AppendReceipt: Sendable, Equatable {
    public var firstSequence: UInt64
    public var lastSequence: UInt64

    public init(firstSequence: UInt64, lastSequence: UInt64) {
        self.firstSequence = firstSequence
        self.lastSequence = lastSequence
    }
}

/// An event as stored: its sequence number and the timestamp it was committed with.
public struct StoredEvent: Sendable, Equatable {
    public var sequence: UInt64
    public var timestampMilliseconds: Int64
    public var event: Event
    /// Who asked for the event through the control socket; `nil` for the controller's own
    /// events (and for events of logs written before callers were recorded).
    public var caller: Caller?

    public init(sequence: UInt64, timestampMilliseconds: Int64, event: Event, caller: Caller? = nil) {
        self.sequence = sequence
        self.timestampMilliseconds = timestampMilliseconds
        self.event = event
        self.caller = caller
    }
}
