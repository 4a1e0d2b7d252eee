import SnapbackCore

/// The port that creates, opens and removes volumes' backing stores.
public protocol VolumeProvider: AnyObject, Sendable {
    /// Creates the backing store of a new volume; or, when `adopt` is true and its given path
    /// exists with the right size, adopts it. An existing path without `adopt` throws
    /// ``PathExists``.
    func create(_ volume: Volume, adopt: Bool) throws -> BlockStore
    /// Opens an existing volume's backing store, checking its size.
    func open(_ volume: Volume) throws(BackingProblem) -> BlockStore
    /// Deletes a removed volume's backing store when Snapback created it.
    func remove(_ volume: Volume)
}

/// A new volume's path exists already (a file or a device) and adopting it was not asked for.
public struct PathExists: Error, CustomStringConvertible {
    public var path: String
    public init(path: String) { self.path = path }
    public var description: String { "\(path) exists; give -adopt to take it (and its bytes) as the volume" }
}
