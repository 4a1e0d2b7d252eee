import SnapbackCore

/// The port that creates, opens and removes volumes' backing stores.
public protocol VolumeProvider: AnyObject, Sendable {
    /// Creates (or, for a given path that exists with the right size, adopts) the backing store
    /// of a new volume.
    func create(_ volume: Volume) throws -> BlockStore
    /// Opens an existing volume's backing store, checking its size.
    func open(_ volume: Volume) throws(BackingProblem) -> BlockStore
    /// Deletes a removed volume's backing store when Snapback created it.
    func remove(_ volume: Volume)
}
