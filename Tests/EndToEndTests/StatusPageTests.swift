import Foundation
import SnapbackAPI
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Issue 15, part 3: the live status page of a real snapbackd (`--http PORT`), rendered in a real
/// browser (Debian's headless Chromium, installed by tools/setup) while a rollback runs, its
/// timeline linking to story pages that print what `snapback log explain` prints; read-only and
/// escaped.
@Suite("status page")
struct StatusPageTests {
    @Test("Chromium renders volumes, lcmaps and lcgrps with a running rollback's progress, the timeline's sequence numbers and story links")
    func renderedDuringRollback() async throws {
        let chromium = try Chromium.require()
        // --background-share 5: while another volume's host writes, the rollback runs 5 % of the
        // time, so that 256 MiB take seconds and the page is rendered while it runs.
        let rig = try await Daemon.withStatusPage(["--background-share", "5"])
        defer { rig.cleanup() }
        try await rig.ok("mkvolume", "-name", "src", "-size", "320m")
        try await rig.ok("mkvolume", "-name", "tgt", "-size", "320m")
        try await rig.ok("mkvolume", "-name", "busy", "-size", "16m", "-detect", "on")
        try await rig.ok("mkvolume", "-name", "gsrc", "-size", "4m")
        try await rig.ok("mkvolume", "-name", "gtgt", "-size", "4m")
        try await rig.ok("mklcmap", "-source", "src", "-target", "tgt", "-name", "m0", "-autorestore", "on", "-copyrate", "0")
        try await rig.ok("mklcgrp", "-name", "g0", "-autorestore", "on")
        try await rig.ok("mklcmap", "-source", "gsrc", "-target", "gtgt", "-name", "m1", "-copyrate", "0", "-lcgrp", "g0")
        try await rig.ok("startlcmap", "m0")
        try await rig.ok("startlcgrp", "g0")
        let written = try await rig.qemuIO("src", ["write -P 0x5A 0 256M"])
        #expect(written.exitCode == 0, "qemu-io: \(written)")

        let busy = try rig.startBusyWriter("busy")
        defer { busy.stop() }
        try await Task.sleep(for: .milliseconds(300))
        try await rig.ok("fault", "-volume", "src", "-reason", "ransomware <script>alert(\"x\")</script>")

        // During the rollback.
        let during = try await chromium.dumpDOM(rig.url("/"))
        let events = try await rig.events()
        let fault = try #require(events.of("VolumeFaulted").last, "no VolumeFaulted in \(events)")
        let started = try #require(events.of("RollbackStarted").last, "no RollbackStarted in \(events)")
        let map = try #require(during.element("tr", attribute: "data-name", equals: "m0"), "no row of lcmap m0 in \(during.html)")
        #expect(map.attribute("data-restoring") == "yes", "the page was rendered after the rollback ended: \(map.html)")
        let percent = try #require(map.inner("div", class: "rollback-progress")?.attribute("data-percent").flatMap { Int($0) }, "\(map.html)")
        #expect((0...100).contains(percent))
        #expect(map.html.contains("<progress class=\"restoring\" max=\"100\" value=\"\(percent)\">"), "\(map.html)")
        #expect(map.html.contains("dirty grains"), "the rollback's grains: \(map.html)")
        #expect(during.element("tr", attribute: "data-name", equals: "src")?.attribute("data-status") == "restoring")
        #expect(during.element("tr", attribute: "data-name", equals: "tgt")?.attribute("data-status") == "online")
        let busyRow = try #require(during.element("tr", attribute: "data-name", equals: "busy"))
        #expect(busyRow.inner("td", class: "anomaly-score") != nil, "detection on: an anomaly score: \(busyRow.html)")
        #expect(during.element("tr", attribute: "data-name", equals: "src")?.html.contains("320 MiB") == true)
        let group = try #require(during.element("tr", attribute: "data-name", equals: "g0"), "no row of lcgrp g0")
        #expect(group.html.contains("href=\"/explain/lcmap/m1\""), "\(group.html)")
        #expect(during.element("tr", attribute: "data-name", equals: "m1")?.html.contains("href=\"/explain/lcgrp/g0\"") == true)
        // The timeline: the fault and the rollback's start with their sequence numbers, linking
        // to the stories at those events.
        let faultItem = try #require(during.element("li", attribute: "data-seq", equals: String(fault.sequence)), "\(during.html)")
        #expect(faultItem.html.contains("href=\"/explain/volume/src#seq-\(fault.sequence)\">seq \(fault.sequence)</a>"), "\(faultItem.html)")
        #expect(faultItem.html.contains("&lt;script&gt;alert(\"x\")&lt;/script&gt;"), "the reason, escaped: \(faultItem.html)")
        let startedItem = try #require(during.element("li", attribute: "data-seq", equals: String(started.sequence)))
        #expect(startedItem.html.contains("href=\"/explain/lcmap/m0#seq-\(started.sequence)\""), "\(startedItem.html)")
        #expect(startedItem.html.contains("href=\"/explain/volume/src\""), "\(startedItem.html)")
        #expect(!during.html.lowercased().contains("<script"), "a script element in the page")

        // A screenshot of the same page: a PNG that is not empty.
        let screenshots = NSTemporaryDirectory() + "/snapback-status-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        try FileManager.default.createDirectory(atPath: screenshots, withIntermediateDirectories: true)
        defer { if ProcessInfo.processInfo.environment["SNAPBACK_E2E_KEEP"] == nil { try? FileManager.default.removeItem(atPath: screenshots) } }
        let png = try await chromium.screenshot(rig.url("/"), to: screenshots + "/status.png")
        #expect(png.count > 1000 && png.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), "not a PNG: \(png.prefix(16))")

        // After the rollback: the source online, the map without a rollback, its end in the timeline.
        busy.stop()
        try await rig.waitUntilNoRollback("m0")
        let after = try await chromium.dumpDOM(rig.url("/"))
        let completed = try #require(try await rig.events().of("RollbackCompleted").last)
        #expect(after.element("tr", attribute: "data-name", equals: "src")?.attribute("data-status") == "online")
        #expect(after.element("tr", attribute: "data-name", equals: "m0")?.attribute("data-restoring") == "no")
        let completedItem = try #require(after.element("li", attribute: "data-seq", equals: String(completed.sequence)), "\(after.html)")
        #expect(completedItem.html.contains("rollback finished"), "\(completedItem.html)")
        #expect(completedItem.html.contains("href=\"/explain/lcmap/m0#seq-\(completed.sequence)\""))

        // The stories the timeline links to: what `snapback log explain` prints, line by line.
        for (kind, name) in [("volume", "src"), ("lcmap", "m0"), ("lcgrp", "g0")] {
            let story = try await chromium.dumpDOM(rig.url("/explain/\(kind)/\(name)"))
            let explained = try await rig.snapback(["log", "explain", "-data-dir", rig.directory, name])
            #expect(explained.exitCode == 0, "log explain \(name): \(explained)")
            let expected = explained.stdout.split(separator: "\n").map(String.init)
            let shown = story.elements("li").compactMap { $0.attribute("data-text").map(HTMLText.unescaped) }
            #expect(!expected.isEmpty && shown == expected, "story of \(kind) \(name): \(shown) against log explain's \(expected)")
            #expect(!story.html.lowercased().contains("<script"), "a script element in the story of \(name)")
        }
        let story = try await chromium.dumpDOM(rig.url("/explain/volume/src"))
        #expect(story.element("li", attribute: "id", equals: "seq-\(fault.sequence)") != nil, "the timeline's anchor seq-\(fault.sequence)")
    }

    @Test("read-only: POST, PUT and DELETE are refused with 405 and change nothing; names and reasons are escaped; a bare port is loopback")
    func readOnlyAndEscaped() async throws {
        let rig = try await Daemon.withStatusPage()
        defer { rig.cleanup() }
        try await rig.ok("mkvolume", "-name", "v0", "-size", "1m")
        try await rig.ok("fault", "-volume", "v0", "-reason", "<img src=x onerror=alert(1)>")
        let before = try await rig.events().count

        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            for path in ["/", "/explain/volume/v0", "/v1/volumes"] {
                let answer = try StatusPageHTTP.request(port: rig.httpPort, method: method, path: path, body: "{\"name\":\"x\",\"size\":1048576}")
                #expect(answer.status.hasPrefix("HTTP/1.1 405"), "\(method) \(path): \(answer.status)")
                #expect(answer.headers["allow"] == "GET", "\(method) \(path): Allow \(answer.headers)")
            }
        }
        #expect(try await rig.events().count == before, "a refused request recorded events")

        let page = try StatusPageHTTP.request(port: rig.httpPort, method: "GET", path: "/")
        #expect(page.status.hasPrefix("HTTP/1.1 200"), "GET /: \(page.status)")
        #expect(page.headers["content-type"] == "text/html; charset=utf-8")
        #expect(page.headers["content-security-policy"]?.contains("default-src 'none'") == true, "\(page.headers)")
        #expect(page.body.contains("&lt;img src=x onerror=alert(1)&gt;"), "the fault's reason, escaped")
        #expect(!page.body.contains("<img"), "an injected element")
        #expect(page.body.contains("<meta http-equiv=\"refresh\" content=\"1\">"), "the page reloads itself")
        #expect(!page.body.lowercased().contains("<script"), "the page has no script")

        // A name from the URL is shown escaped on the 404 page.
        let unknown = try StatusPageHTTP.request(port: rig.httpPort, method: "GET", path: "/explain/volume/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
        #expect(unknown.status.hasPrefix("HTTP/1.1 404"), "\(unknown.status)")
        #expect(unknown.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "\(unknown.body)")
        #expect(!unknown.body.lowercased().contains("<script"), "\(unknown.body)")
        #expect(try StatusPageHTTP.request(port: rig.httpPort, method: "GET", path: "/explain/disk/v0").status.hasPrefix("HTTP/1.1 404"))
        #expect(try StatusPageHTTP.request(port: rig.httpPort, method: "GET", path: "/metrics").status.hasPrefix("HTTP/1.1 404"))

        // On loopback, only requests addressed to a loopback name are answered (DNS rebinding).
        for host in ["localhost:\(rig.httpPort)", "127.0.0.1", "[::1]:\(rig.httpPort)", "LOCALHOST"] {
            let answer = try StatusPageHTTP.request(port: rig.httpPort, method: "GET", path: "/", host: host)
            #expect(answer.status.hasPrefix("HTTP/1.1 200"), "Host \(host): \(answer.status)")
        }
        for host in ["evil.example:\(rig.httpPort)", "127.0.0.1.evil.example", "[::2]"] {
            let answer = try StatusPageHTTP.request(port: rig.httpPort, method: "GET", path: "/", host: host)
            #expect(answer.status.hasPrefix("HTTP/1.1 403"), "Host \(host): \(answer.status)")
            #expect(!answer.body.contains("v0"), "a refused request saw the volumes")
        }

        // A bare port: loopback, and no warning about an unauthenticated page.
        let log = (try? String(contentsOfFile: rig.directory + "/snapbackd.stderr", encoding: .utf8)) ?? ""
        #expect(log.contains("status page listening") && log.contains("127.0.0.1:\(rig.httpPort)"), "\(log)")
        #expect(!log.contains("beyond loopback"), "\(log)")
    }

    @Test("a malformed --http address is refused at start-up")
    func malformedAddress() async throws {
        for address in ["", "host:", "127.0.0.1:70000", "x:y"] {
            let output = try await runProcess(try Binaries.path("snapbackd"), ["--data-dir", scratchPath("sbe2e-http"), "--http", address])
            #expect(output.exitCode != 0 && output.stderr.contains("--http takes PORT or HOST:PORT"), "--http \(address): \(output)")
        }
    }
}

// MARK: - The rig

extension Daemon {
    /// A daemon started with `--http PORT` (a bare port: loopback) and `arguments`.
    static func withStatusPage(_ arguments: [String] = []) async throws -> Daemon {
        try await start(listeners: ["--http"], arguments: arguments)
    }

    var httpPort: Int { listenerPorts["--http"]! }

    func url(_ path: String) -> String { "http://127.0.0.1:\(httpPort)\(path)" }

    /// A host writing 64 KiB again and again to `export` until stopped (at most 60 s): other
    /// volumes' I/O, which paces rollbacks (`--background-share`).
    func startBusyWriter(_ export: String) throws -> BusyWriter {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Binaries.qemuIO)
        process.arguments = ["-f", "raw", uri(export)] + Array(repeating: ["-c", "write -P 0x11 0 64k"], count: 20000).flatMap { $0 }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let writer = BusyWriter(process)
        DispatchQueue.global().asyncAfter(deadline: .now() + 60) { writer.stop() }
        return writer
    }
}

/// A child process that is stopped once (SIGKILL), whoever asks first.
final class BusyWriter: @unchecked Sendable {
    private let process: Process
    private let lock = NSLock()
    private var stopped = false

    init(_ process: Process) { self.process = process }

    func stop() {
        let first = lock.withLock {
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

// MARK: - The browser

/// Debian's headless Chromium. Missing, the test fails and says how to install it.
struct Chromium {
    let path: String

    static func require(sourceLocation: SourceLocation = #_sourceLocation) throws -> Chromium {
        for path in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] where FileManager.default.isExecutableFile(atPath: path) {
            return Chromium(path: path)
        }
        throw RigError("chromium is missing (/usr/bin/chromium): install Debian's chromium package (tools/setup does)")
    }

    private var flags: [String] { ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--user-data-dir=" + scratchPath("snapback-chromium")] }

    /// The DOM after the page loaded, serialized (`--dump-dom`).
    func dumpDOM(_ url: String) async throws -> RenderedDOM {
        let output = try await runProcess(path, flags + ["--dump-dom", url], timeoutSeconds: 60)
        guard output.exitCode == 0, output.stdout.contains("</html>") else { throw RigError("chromium --dump-dom \(url): \(output)") }
        return RenderedDOM(html: output.stdout)
    }

    /// A 1200×900 screenshot of the page at `file`; its bytes.
    func screenshot(_ url: String, to file: String) async throws -> [UInt8] {
        let output = try await runProcess(path, flags + ["--screenshot=\(file)", "--window-size=1200,900", "--hide-scrollbars", url], timeoutSeconds: 60)
        guard output.exitCode == 0, let data = FileManager.default.contents(atPath: file) else {
            throw RigError("chromium --screenshot \(url): \(output)")
        }
        return Array(data)
    }
}

/// Serialized HTML, searched the simple way: the page's own markup is regular (one element
/// per line or attribute-tagged), which is all these tests need.
struct RenderedDOM {
    let html: String

    /// The first `<tag ...>...</tag>` whose `attribute` is `value`.
    func element(_ tag: String, attribute: String, equals value: String) -> RenderedDOM? {
        elements(tag).first { $0.attribute(attribute) == value }
    }

    /// Every `<tag ...>...</tag>` (not nested in one another).
    func elements(_ tag: String) -> [RenderedDOM] {
        var found: [RenderedDOM] = []
        var rest = html[...]
        while let open = rest.range(of: "<\(tag) ") ?? rest.range(of: "<\(tag)>") {
            guard let close = rest[open.upperBound...].range(of: "</\(tag)>") else { break }
            found.append(RenderedDOM(html: String(rest[open.lowerBound..<close.upperBound])))
            rest = rest[close.upperBound...]
        }
        return found
    }

    /// The first `<tag class="cls ...">` inside.
    func inner(_ tag: String, class name: String) -> RenderedDOM? {
        elements(tag).first { $0.attribute("class")?.split(separator: " ").contains(Substring(name)) == true }
    }

    /// The value of an attribute of the outermost element, as serialized.
    func attribute(_ name: String) -> String? {
        // The start tag ends at the first `>` outside a quoted value.
        var quoted = false
        guard let end = html.firstIndex(where: { character in
            if character == "\"" { quoted.toggle() }
            return character == ">" && !quoted
        }) else { return nil }
        let head = html[..<end]
        guard let start = head.range(of: " \(name)=\"") else { return nil }
        guard let quote = head[start.upperBound...].firstIndex(of: "\"") else { return nil }
        return String(head[start.upperBound..<quote])
    }
}

enum HTMLText {
    /// The text of serialized HTML with its five entities back.
    static func unescaped(_ text: String) -> String {
        text.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">").replacingOccurrences(of: "&quot;", with: "\"")
            .replacingOccurrences(of: "&#39;", with: "'").replacingOccurrences(of: "&amp;", with: "&")
    }
}

// MARK: - Plain HTTP

enum StatusPageHTTP {
    /// One HTTP/1.1 request on 127.0.0.1:`port`: the status line, the headers (lowercased names)
    /// and the body.
    static func request(port: Int, method: String, path: String, body: String = "", host: String? = nil) throws -> (status: String, headers: [String: String], body: String) {
        let response = try rawHTTPRequest(.loopback(port: port), method, path, host: host ?? "127.0.0.1:\(port)", body: body)
        return (response.status, response.headers, response.body)
    }
}
