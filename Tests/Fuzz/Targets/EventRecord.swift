// Fuzz target `event-record`: what `snapback log`, replay and recovery decode from disk.
//
// Built by tools/fuzz as one module named `SnapbackCore` from Sources/SnapbackCore/*.swift,
// Sources/SnapbackLog/LogRecord.swift (its `import SnapbackCore` is then ignored; its
// `import Crypto` is served by Tests/Fuzz/Stubs/Crypto.swift) and this file.
//
// The first input byte picks a mode (modulo 4); the rest is its input:
//   0  a record value: RecordView's header checks (flags, the caller block), the checksum, the
//      payload decoder;
//   1  a UInt16 LE event type code and an event payload: Event.decode;
//   2  a checkpoint: ControllerState.decode;
//   3  a log: records of [UInt16 LE type][UInt16 LE length][payload], decoded and folded with
//      `evolve` from the empty state, as replay does.
// Properties, beyond "never traps": what decodes re-encodes to the same bytes (events, records
// apart from the checksum, which must then equal the computed one, and checkpoints); folding any
// decodable log never traps, nor do the state's queries, nor encoding the folded state.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEventRecord(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    guard let mode = input.first else { return 0 }
    let body = UnsafeRawBufferPointer(rebasing: input[1...])
    switch mode % 4 {
    case 0: checkRecord(body)
    case 1: checkEvent(body)
    case 2: checkState(body)
    default: checkLog(body)
    }
    return 0
}

/// Mode 0: a record value as LMDB would hand it to `RecordView`.
private func checkRecord(_ value: UnsafeRawBufferPointer) {
    let view: RecordView
    do {
        view = try RecordView(sequence: 1, value: value)
    } catch {
        _ = error.description
        return
    }
    let callerBytes = view.caller == nil ? 0 : LogRecord.callerBytes
    fuzzCheck(value.count == LogRecord.headerBytes + Int(view.payloadBytes) + callerBytes, "RecordView accepted a value of the wrong length")
    fuzzCheck(view.formatVersion == LogRecord.formatVersion)
    fuzzCheck(view.flags & ~LogRecord.knownFlags == 0, "RecordView accepted unknown flag bits \(view.flags)")
    fuzzCheck((view.caller != nil) == (view.flags & LogRecord.callerFlag != 0))
    let checksumMatches = (try? view.checkChecksum()) != nil
    fuzzCheck(checksumMatches == (view.storedChecksum == view.computedChecksum))
    _ = try? view.checkChain(previous: LogRecord.zeroHash)
    _ = view.hash
    let event: Event
    do {
        event = try view.decodeEvent()
    } catch {
        _ = error.description
        return
    }
    checkEventReencodes(event, typeCode: view.typeCode, payload: view.payload)
    // The writer's encoding of the decoded event gives back the same record, except that it
    // computes the checksum: which must then be the one the reader computes.
    let again = LogRecord.encode(
        event: event, caller: view.caller, timestampMilliseconds: view.timestampMilliseconds, previousHash: Array(view.previousHash))
    fuzzCheck(again.count == value.count, "record re-encodes to \(again.count) bytes, not \(value.count)")
    fuzzCheck(again[0..<48].elementsEqual(value[0..<48]), "record header re-encodes differently")
    fuzzCheck(
        again[LogRecord.headerBytes...].elementsEqual(value[LogRecord.headerBytes...]), "record payload or caller re-encodes differently")
    again.withUnsafeBytes { bytes in
        let written = try! RecordView(sequence: 1, value: bytes)
        fuzzCheck(written.storedChecksum == view.computedChecksum, "writer and reader disagree on the checksum")
        fuzzCheck((try? written.checkChecksum()) != nil)
    }
}

/// Mode 1: a type code and a payload.
private func checkEvent(_ body: UnsafeRawBufferPointer) {
    guard body.count >= 2 else { return }
    let typeCode = UInt16(body[0]) | UInt16(body[1]) << 8
    let payload = UnsafeRawBufferPointer(rebasing: body[2...])
    let event: Event
    do {
        event = try Event.decode(typeCode: typeCode, payload: payload)
    } catch {
        _ = error.description
        return
    }
    checkEventReencodes(event, typeCode: typeCode, payload: payload)
}

private func checkEventReencodes(_ event: Event, typeCode: UInt16, payload: UnsafeRawBufferPointer) {
    fuzzCheck(event.type.rawValue == typeCode, "\(typeCode) decoded as a \(event.type)")
    fuzzCheck(event.encodedPayload().elementsEqual(payload), "\(event.type) payload re-encodes differently")
    fuzzCheck(EventType(name: event.type.description) == event.type)
    _ = event.mapIDs
    _ = event.volumeIDs
}

/// Mode 2: a checkpoint.
private func checkState(_ bytes: UnsafeRawBufferPointer) {
    let state: ControllerState
    do {
        state = try ControllerState.decode(bytes)
    } catch {
        _ = error.description
        return
    }
    fuzzCheck(state.encoded().elementsEqual(bytes), "checkpoint re-encodes differently")
    query(state)
}

/// Mode 3: a log folded from the empty state. Events that do not decode are skipped (replay
/// would stop there; skipping reaches more states).
private func checkLog(_ body: UnsafeRawBufferPointer) {
    var state = ControllerState()
    var offset = 0
    var applied = 0
    while body.count - offset >= 4, applied < 64 {
        let typeCode = UInt16(body[offset]) | UInt16(body[offset + 1]) << 8
        let length = Int(UInt16(body[offset + 2]) | UInt16(body[offset + 3]) << 8)
        offset += 4
        let payload = UnsafeRawBufferPointer(rebasing: body[offset..<min(body.count, offset + length)])
        offset = min(body.count, offset + length)
        guard let event = try? Event.decode(typeCode: typeCode, payload: payload) else { continue }
        state = evolve(state, event)
        applied += 1
        query(state)
    }
    fuzzCheck(state.eventsApplied == UInt64(applied))
    // A folded state always encodes. Whether it decodes depends on the events (any log decodes,
    // not only one `decide` wrote); when it does, the tables come back unchanged.
    let bytes = state.encoded()
    if let decoded = bytes.withUnsafeBytes({ try? ControllerState.decode($0) }) {
        fuzzCheck(
            decoded.volumes == state.volumes && decoded.maps == state.maps, "checkpoint of a folded log decodes differently")
        fuzzCheck(decoded.encoded() == bytes)
    }
}

/// What `snapback`, the API rows and the controller ask of a state.
private func query(_ state: ControllerState) {
    for volume in state.volumesByID {
        _ = state.volume(volume.name)
        _ = state.volume(String(volume.id))
        _ = state.forwardMaps(ofSource: volume.id)
        _ = state.maps(touching: volume.id)
        _ = state.runningRollback(onto: volume.id)
        _ = automaticRollbackChoice(for: volume.id, in: state)
        _ = volume.status.description
    }
    for map in state.mapsByID {
        _ = state.map(map.name)
        _ = map.progressPercent
        _ = map.rollback?.progressPercent
        _ = map.isActive
        _ = map.state.description
        if (0...Limits.copyRateMax).contains(map.copyRate) { _ = CopyRate.bytesPerSecond(map.copyRate) }
    }
}
