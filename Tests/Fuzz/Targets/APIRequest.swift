// Fuzz target `api-request`: what a control-API client or a `snapback` user can send.
//
// Built by tools/fuzz as one module named `SnapbackCore` from Sources/SnapbackCore/*.swift,
// Sources/SnapbackAPI/Rows.swift and RequestCommands.swift (their `import SnapbackCore` is then
// ignored),
// Sources/SnapbackCLIFastPath/SizeParser.swift and this file.
//
// Input: a kind byte ('0'…'9' and ':'…'?', any byte counts modulo 16), a path parameter up to
// the first newline (the `{volume}`, `{map}` or `{group}` of the route), and the request body:
//   0 POST /v1/volumes                CreateVolumeRequest
//   1 POST /v1/lcmaps                 CreateMapRequest
//   2 PATCH /v1/lcmaps/{map}          ChangeMapRequest
//   3 POST /v1/lcmaps/{map}/start     StartMapRequest (empty body allowed)
//   4 POST /v1/lcmaps/{map}/stop      ForceRequest (empty body allowed)
//   5 POST /v1/volumes/{v}/fault      FaultRequest
//   6 DELETE /v1/volumes/{v}          no body
//   7 POST /v1/volumes/{v}/recover    no body
//   8 DELETE /v1/lcmaps/{map}         the body is the `force` query value
//   9 `snapback mkvolume -size`       the body is the text given to `parseSize`
//   : POST /v1/lcgroups               CreateGroupRequest (empty body allowed)
//   ; PATCH /v1/lcgroups/{group}      ChangeGroupRequest
//   < POST /v1/lcgroups/{group}/start StartMapRequest (empty body allowed)
//   = POST /v1/lcgroups/{group}/stop  ForceRequest (empty body allowed)
//   > DELETE /v1/lcgroups/{group}     the body is the `force` query value
//   ? `snapback mkvolume -size`       as 9
// A body that decodes becomes a Command through the functions snapbackd's ControlAPI calls
// (Sources/SnapbackAPI/RequestCommands.swift), and `decide` runs it against a fixed state
// holding every kind of volume and map. Properties, beyond "never traps": a rejection's message
// is one line without control characters and bounded; accepted events re-decode from their
// payloads and fold into a state whose checkpoint decodes back to it; the API rows of that state
// build; a size `parseSize` accepts prints back to itself.

import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAPIRequest(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    guard let kind = input.first.map({ Int($0 &- 0x30) % 16 }) else { return 0 }
    let rest = input.dropFirst()
    let newline = rest.firstIndex(of: 0x0A) ?? rest.endIndex
    let reference = String(decoding: rest[..<newline], as: UTF8.self)
    let body = Data(rest[newline...].dropFirst())
    if let command = command(kind: kind, reference: reference, body: body) { check(command) }
    return 0
}

/// The Command a request becomes, or nil when the API answers 400 before `decide`: the same
/// calls as Sources/SnapbackServer/ControlAPI.swift (Sources/SnapbackAPI/RequestCommands.swift).
private func command(kind: Int, reference: String, body: Data) -> Command? {
    switch kind {
    case 0:
        let request: CreateVolumeRequest? = decodeBody(body)
        return try? request?.command()
    case 1:
        guard let request: CreateMapRequest = decodeBody(body) else { return nil }
        return try? request.command()
    case 2:
        guard let request: ChangeMapRequest = decodeBody(body) else { return nil }
        return try? request.command(map: reference)
    case 3:
        let request: StartMapRequest? = body.isEmpty ? StartMapRequest(prep: nil, restore: nil) : decodeBody(body)
        return request?.command(map: reference)
    case 4:
        let request: ForceRequest? = body.isEmpty ? ForceRequest(force: nil) : decodeBody(body)
        return request?.stopCommand(map: reference)
    case 5:
        let request: FaultRequest? = decodeBody(body)
        return try? request?.command(volume: reference)
    case 6:
        return .removeVolume(volume: reference)
    case 7:
        return .recoverVolume(volume: reference)
    case 8:
        return ForceRequest.removeCommand(map: reference, forceQuery: String(decoding: body, as: UTF8.self))
    case 10:
        let request: CreateGroupRequest? = body.isEmpty ? CreateGroupRequest(name: nil, autorestore: nil, autorestoredelay: nil) : decodeBody(body)
        return try? request?.command()
    case 11:
        let request: ChangeGroupRequest? = decodeBody(body)
        return try? request?.command(group: reference)
    case 12:
        let request: StartMapRequest? = body.isEmpty ? StartMapRequest(prep: nil, restore: nil) : decodeBody(body)
        return request?.command(group: reference)
    case 13:
        let request: ForceRequest? = body.isEmpty ? ForceRequest(force: nil) : decodeBody(body)
        return request?.stopCommand(group: reference)
    case 14:
        return ForceRequest.removeCommand(group: reference, forceQuery: String(decoding: body, as: UTF8.self))
    default:
        checkSize(String(decoding: body, as: UTF8.self))
        return nil
    }
}

private func decodeBody<T: Decodable>(_ body: Data) -> T? {
    try? JSONDecoder().decode(T.self, from: body)
}

/// Runs `command` against the fixture through `decide`, then folds what it accepts.
private func check(_ command: Command) {
    let events: [Event]
    do {
        events = try decide(command, fixture)
    } catch {
        let message = error.message
        fuzzCheck(!message.isEmpty, "\(error.code) has an empty message")
        fuzzCheck(
            !message.unicodeScalars.contains { $0.properties.generalCategory == .control },
            "\(error.code) message is not one line: \(message.debugDescription)")
        fuzzCheck(message.utf8.count <= 2048, "\(error.code) message of \(message.utf8.count) bytes")
        _ = httpStatus(for: error.code)
        _ = error.description
        return
    }
    var state = fixture
    for event in events {
        // The paired check of the log: what is recorded decodes to the same event.
        let payload = event.encodedPayload()
        let decoded = payload.withUnsafeBytes { try? Event.decode(typeCode: event.type.rawValue, payload: $0) }
        fuzzCheck(decoded == event, "\(event) does not decode from its payload")
        state = evolve(state, event)
    }
    let checkpoint = state.encoded()
    let restored = checkpoint.withUnsafeBytes { try? ControllerState.decode($0) }
    fuzzCheck(restored == state, "the checkpoint after \(command) does not decode to the same state")
    for volume in state.volumesByID { _ = VolumeRow(volume, in: state).cells }
    for map in state.mapsByID { _ = MapRow(map, in: state).cells }
    for group in state.groupsByID { _ = GroupRow(group, in: state) }
}

/// `parseSize` never traps, and what it accepts is a size it reads back the same way.
private func checkSize(_ text: String) {
    guard let bytes = parseSize(text) else { return }
    fuzzCheck(parseSize(String(bytes)) == bytes, "\(text.debugDescription) is \(bytes), which does not read back")
    fuzzCheck(parseSize(String(bytes) + "b") == bytes)
}

/// A state with every kind of volume and map, built by `decide` and `evolve` as the controller
/// would: vol0→vol1 m1 copying with autorestore; vol2→vol3 m2 copied and rolling back onto vol2;
/// vol4→vol5 m3 idle with 64 KiB grains, vol4 faulted; vol6→vol7 m4 prepared; big and spare
/// unmapped (spare's size matches the others, big's does not).
private let fixture: ControllerState = {
    let commands: [Command] = [
        .recordControllerStart(version: "fuzz"),
        .createVolume(name: "vol0", sizeBytes: 1 << 20, path: nil),
        .createVolume(name: "vol1", sizeBytes: 1 << 20, path: "/srv/vol1.img"),
        .createVolume(name: "vol2", sizeBytes: 1 << 20, path: nil),
        .createVolume(name: "vol3", sizeBytes: 1 << 20, path: nil),
        .createVolume(name: "vol4", sizeBytes: 1 << 20, path: nil),
        .createVolume(name: "vol5", sizeBytes: 1 << 20, path: nil),
        .createVolume(name: "vol6", sizeBytes: 1 << 20, path: nil),
        .createVolume(name: "vol7", sizeBytes: 1 << 20, path: nil),
        .createVolume(name: "big", sizeBytes: 1 << 30, path: "/dev/big"),
        .createVolume(name: "spare", sizeBytes: 1 << 20, path: nil),
        .createMap(CreateMap(source: "vol0", target: "vol1", name: "m1", autorestore: true)),
        .startMap(map: "m1"),
        .recordCopyProgress(map: 0, grainsCopied: 1),
        .createMap(CreateMap(source: "vol2", target: "vol3", name: "m2")),
        .startMap(map: "m2"),
        .completeCopy(map: 2),
        .startRestore(map: "m2"),
        .recordRollbackProgress(map: 2, grainsRestored: 1, grainsToRestore: 3),
        .createMap(CreateMap(source: "vol4", target: "vol5", name: "m3", copyRate: 0, grainSizeBytes: 64 << 10)),
        .reportFault(volume: "vol4", cause: .ioError, reason: "EIO at 0"),
        .createMap(CreateMap(source: "vol6", target: "vol7", name: "m4", copyRate: 150)),
        .prepareMap(map: "m4"),
        // Group g0 of m5 (vol8→vol9) and m6 (vol10→vol11), started, autorestore on; g1 empty.
        .createVolume(name: "vol8", sizeBytes: 1 << 20, path: nil),
        .createVolume(name: "vol9", sizeBytes: 1 << 20, path: nil),
        .createVolume(name: "vol10", sizeBytes: 1 << 20, path: nil),
        .createVolume(name: "vol11", sizeBytes: 1 << 20, path: nil),
        .createGroup(name: "g0", autorestore: true, autorestoreDelaySeconds: 0),
        .createGroup(name: "g1", autorestore: false, autorestoreDelaySeconds: 30),
        .createMap(CreateMap(source: "vol8", target: "vol9", name: "m5", copyRate: 0, group: "g0")),
        .createMap(CreateMap(source: "vol10", target: "vol11", name: "m6", copyRate: 0, group: "g0")),
        .startGroup(group: "g0"),
    ]
    var state = ControllerState()
    for command in commands {
        for event in try! decide(command, state) { state = evolve(state, event) }
    }
    return state
}()
