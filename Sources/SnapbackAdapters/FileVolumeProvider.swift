import Foundation
import SnapbackCore
import SnapbackData

/// Volumes as sparse files in `DIR/volumes/ID.img`, or at a path given at creation (a file or a
/// block device, never deleted by Snapback).
public final class FileVolumeProvider: VolumeProvider, @unchecked Sendable {
    public let directory: String

    public init(dataDirectory: String) throws {
        directory = dataDirectory + "/volumes"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    public func path(of volume: Volume) -> String { volume.path ?? "\(directory)/\(volume.id).img" }

    public func create(_ volume: Volume, adopt: Bool) throws -> BlockStore {
        let path = path(of: volume)
        if volume.path == nil {
            // A stale file of a volume whose creation never committed is not anyone's data.
            unlink(path)
        } else if FileManager.default.fileExists(atPath: path) {
            guard adopt else { throw PathExists(path: path) }
            return try FileBlockStore.open(path: path, sizeBytes: volume.sizeBytes)
        }
        return try FileBlockStore.create(path: path, sizeBytes: volume.sizeBytes)
    }

    public func open(_ volume: Volume) throws(BackingProblem) -> BlockStore {
        try FileBlockStore.open(path: path(of: volume), sizeBytes: volume.sizeBytes)
    }

    public func remove(_ volume: Volume) {
        if volume.path == nil { unlink(path(of: volume)) }
    }
}
