import SnapbackCore

// The command each mutating request of the control API becomes (`Specs/openapi.yaml`). Pure, so
// that the `api-request` fuzz target runs the very code snapbackd runs. A value the API refuses
// before the state machine sees it throws an `ErrorBody` (HTTP 400).

extension CreateVolumeRequest {
    /// `POST /v1/volumes`.
    public func command() throws(ErrorBody) -> Command {
        let on = try detect.map(detectOnOff) ?? false
        let level = try sensitivity.map(detectionSensitivity)
        if level != nil && !on {
            throw ErrorBody(code: "invalid_sensitivity", message: "sensitivity needs detect on")
        }
        return .createVolume(name: name, sizeBytes: size, path: path, adopt: adopt ?? false, detection: on ? level ?? .medium : nil)
    }
}

extension ChangeVolumeRequest {
    /// `PATCH /v1/volumes/{volume}`.
    public func command(volume: String) throws(ErrorBody) -> Command {
        .changeVolume(volume: volume, newName: name, detect: try detect.map(detectOnOff), sensitivity: try sensitivity.map(detectionSensitivity))
    }
}

/// `on`/`off` of a `detect` field, or `invalid_detect`.
private func detectOnOff(_ text: String) throws(ErrorBody) -> Bool {
    guard let value = parseOnOff(text) else {
        throw ErrorBody(code: "invalid_detect", message: "detect must be on or off, not \(text.debugDescription.prefix(80))")
    }
    return value
}

/// A `sensitivity` field, or `invalid_sensitivity`.
private func detectionSensitivity(_ text: String) throws(ErrorBody) -> DetectionSensitivity {
    guard let value = DetectionSensitivity(name: text.lowercased()) else {
        throw ErrorBody(code: "invalid_sensitivity", message: "sensitivity must be low, medium or high, not \(text.debugDescription.prefix(80))")
    }
    return value
}

extension CreateMapRequest {
    /// `POST /v1/lcmaps`: unset options keep the defaults of `CreateMap`.
    public func command() throws(ErrorBody) -> Command {
        var spec = CreateMap(source: source, target: target, name: name)
        if let autorestore { spec.autorestore = try onOff(autorestore) }
        if let copyrate { spec.copyRate = copyrate }
        if let autorestoredelay { spec.autorestoreDelaySeconds = try delay(autorestoredelay) }
        spec.group = lcgrp
        if let grainsize {
            guard grainsize > 0, grainsize <= 1 << 20 else {
                throw ErrorBody(code: "invalid_grain_size", message: "grain size must be 64 or 256 (KiB), not \(grainsize)")
            }
            spec.grainSizeBytes = UInt32(grainsize) * 1024
        }
        return .createMap(spec)
    }
}

extension ChangeMapRequest {
    /// `PATCH /v1/lcmaps/{map}`.
    public func command(map: String) throws(ErrorBody) -> Command {
        var value: Bool?
        if let autorestore { value = try onOff(autorestore) }
        var group: MapGroupChange?
        switch (lcgrp, nolcgrp ?? false) {
        case (.some, true):
            throw ErrorBody(code: "bad_request", message: "lcgrp and nolcgrp exclude each other")
        case let (.some(name), false): group = .join(name)
        case (nil, true): group = .leave
        case (nil, false): group = nil
        }
        return .changeMap(
            map: map, autorestore: value, copyRate: copyrate, newName: name, autorestoreDelaySeconds: try autorestoredelay.map(delay), group: group)
    }
}

extension CreateGroupRequest {
    /// `POST /v1/lcgroups`.
    public func command() throws(ErrorBody) -> Command {
        .createGroup(
            name: name, autorestore: try autorestore.map(onOff) ?? false, autorestoreDelaySeconds: try autorestoredelay.map(delay) ?? 0)
    }
}

extension ChangeGroupRequest {
    /// `PATCH /v1/lcgroups/{group}`.
    public func command(group: String) throws(ErrorBody) -> Command {
        .changeGroup(group: group, newName: name, autorestore: try autorestore.map(onOff), autorestoreDelaySeconds: try autorestoredelay.map(delay))
    }
}

extension StartMapRequest {
    /// `POST /v1/lcgroups/{group}/start`.
    public func command(group: String) -> Command {
        restore == true ? .startGroupRestore(group: group) : .startGroup(group: group)
    }
}

extension ForceRequest {
    /// `POST /v1/lcgroups/{group}/stop`.
    public func stopCommand(group: String) -> Command { .stopGroup(group: group, force: force ?? false) }

    /// `DELETE /v1/lcgroups/{group}?force=VALUE`.
    public static func removeCommand(group: String, forceQuery: String?) -> Command {
        .removeGroup(group: group, force: forceQuery == "true" || forceQuery == "1")
    }
}

extension StartMapRequest {
    /// `POST /v1/lcmaps/{map}/start` (an empty body is `StartMapRequest(prep: nil, restore: nil)`).
    public func command(map: String) -> Command {
        restore == true ? .startRestore(map: map) : .startMap(map: map)
    }
}

extension ForceRequest {
    /// `POST /v1/lcmaps/{map}/stop` (an empty body is `ForceRequest(force: nil)`).
    public func stopCommand(map: String) -> Command {
        .stopMap(map: map, force: force ?? false)
    }

    /// `DELETE /v1/lcmaps/{map}?force=VALUE`: `true` or `1` force it.
    public static func removeCommand(map: String, forceQuery: String?) -> Command {
        .removeMap(map: map, force: forceQuery == "true" || forceQuery == "1")
    }
}

extension FaultRequest {
    /// `POST /v1/volumes/{volume}/fault`: an operator's fault.
    public func command(volume: String) throws(ErrorBody) -> Command {
        var onsetMilliseconds: Int64?
        if let onset {
            guard let parsed = parseRFC3339(onset), parsed >= 0 else {
                throw ErrorBody(code: "invalid_onset", message: "onset must be an RFC 3339 time such as 2026-12-02T09:30:00Z, not \(onset.debugDescription.prefix(80))")
            }
            onsetMilliseconds = parsed
        }
        return .reportFault(volume: volume, cause: .operator, reason: reason, onsetMilliseconds: onsetMilliseconds)
    }
}

/// An `autorestoredelay` field: 0–86400 s, or `invalid_delay`.
private func delay(_ seconds: Int) throws(ErrorBody) -> UInt32 {
    guard seconds >= 0, seconds <= Int(Limits.autorestoreDelaySecondsMax) else {
        throw ErrorBody(code: "invalid_delay", message: "autorestoredelay \(seconds) s is outside 0–\(Limits.autorestoreDelaySecondsMax)")
    }
    return UInt32(seconds)
}

/// `on`/`off` of an `autorestore` field, or `invalid_autorestore`.
private func onOff(_ text: String) throws(ErrorBody) -> Bool {
    guard let value = parseOnOff(text) else {
        throw ErrorBody(code: "invalid_autorestore", message: "autorestore must be on or off, not \(text.debugDescription.prefix(80))")
    }
    return value
}
