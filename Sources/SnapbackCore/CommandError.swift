/// A command the state machine rejects: a stable code and a one-line message. The state is
/// unchanged and no event is recorded.
public struct CommandError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        precondition(!message.contains("\n"), "error messages are one line")
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// Stable codes; `Specs/errors.md` lists each with its meaning. Never renumber or reuse.
    public enum Code: String, Sendable, CaseIterable {
        case unknownVolume = "unknown_volume"
        case unknownMap = "unknown_map"
        case duplicateName = "duplicate_name"
        case invalidName = "invalid_name"
        case invalidSize = "invalid_size"
        case invalidPath = "invalid_path"
        case sameSourceTarget = "same_source_target"
        case sizeMismatch = "size_mismatch"
        case targetInUse = "target_in_use"
        case volumeInMap = "volume_in_map"
        case copyRateOutOfRange = "copyrate_out_of_range"
        case invalidGrainSize = "invalid_grain_size"
        case mapAlreadyStarted = "map_already_started"
        case mapNotStarted = "map_not_started"
        case mapActive = "map_active"
        case mapIsReverse = "map_is_reverse"
        case noValidImage = "no_valid_image"
        case mapRestoring = "map_restoring"
        case volumeRestoring = "volume_restoring"
        case volumeFaulted = "volume_faulted"
        case volumeNotFaulted = "volume_not_faulted"
        case invalidReason = "invalid_reason"
        case invalidProgress = "invalid_progress"
        case invalidState = "invalid_state"
        case nothingToChange = "nothing_to_change"
        case limitReached = "limit_reached"
        case pathExists = "path_exists"
        case backingUnavailable = "backing_unavailable"
        case invalidDelay = "invalid_delay"
        case invalidOnset = "invalid_onset"
        case unknownGroup = "unknown_group"
        case groupNotEmpty = "group_not_empty"
        case groupEmpty = "group_empty"
        case groupRestoring = "group_restoring"
        case groupConflict = "group_conflict"
        case groupChanged = "group_changed"
        case mapInGroup = "map_in_group"
    }
}
