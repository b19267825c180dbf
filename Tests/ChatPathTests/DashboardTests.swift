import AsyncHTTPClient
import Foundation
import Testing
import TestKit

/// The analytics dashboard in a real headless browser (Chromium from Debian) against a stack with traffic.
@Suite("Analytics dashboard in a headless browser", .serialized)
struct DashboardTests {
    /// Where the screenshot is kept (under .build/, for a person or CI to look at).
    static let screenshot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../.build/dashboard-check/dashboard.png").standardizedFileURL.path

    static func chromium(_ arguments: [String]) async throws -> String {
        let binary = try #require(findExecutable("chromium") ?? findExecutable("chromium-browser"),
                                  "chromium not found: apt-get install chromium")
        let process = try TestProcess(executable: binary, arguments: [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
        ] + arguments)
        let exited = await withTaskGroup(of: Bool.self) { group in
            group.addTask { _ = await process.waitUntilExit(); return true }
            group.addTask { try? await Task.sleep(for: .seconds(120)); return false }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        if !exited { process.terminate(signal: SIGKILL) }
        #expect(exited, "chromium did not finish within 120 s")
        return process.output
    }

    /// `data-points` of every chart in the DOM, by chart id.
    static func charts(in dom: String) throws -> [String: Int] {
        let pattern = try Regex(#"<svg class="chart" id="chart-([a-z0-9-]+)" data-points="([0-9]+)""#)
        var result: [String: Int] = [:]
        for match in dom.matches(of: pattern) {
            if let id = match.output[1].substring, let points = match.output[2].substring.flatMap({ Int($0) }) {
                result[String(id)] = points
            }
        }
        return result
    }

    @Test("the dashboard loads in Chromium with every chart drawn from live traffic (platform and per tenant), needs the admin token, and a screenshot is saved")
    func dashboardInChromium() async throws {
        try await AnalyticsTests.withMixedStack { stack, consentKey in
            _ = try await AnalyticsTests.sendMixed(stack, count: 600, consentKey: consentKey)
            try await AnalyticsTests.waitCaughtUp(stack)
            let base = "http://127.0.0.1:\(stack.analyticsPort)/dashboard"
            // Without the token: 401 asking for Basic credentials.
            let response = try await stack.http.execute(HTTPClientRequest(url: base), timeout: .seconds(10))
            #expect(response.status.code == 401)
            #expect((response.headers.first(name: "www-authenticate") ?? "").hasPrefix("Basic"))
            var wrong = HTTPClientRequest(url: base)
            wrong.headers.add(name: "authorization", value: "Bearer not-the-admin-token-0000")
            #expect(try await stack.http.execute(wrong, timeout: .seconds(10)).status.code == 401)

            let authed = "http://admin:\(Stack.adminToken)@127.0.0.1:\(stack.analyticsPort)/dashboard"
            let platform = try Self.charts(in: try await Self.chromium(["--dump-dom", authed]))
            #expect(Set(platform.keys) == ["requests", "errors", "handoffs", "p95", "hops", "consent"], "\(platform)")
            for (chart, points) in platform { #expect(points > 0, "the platform's \(chart) chart is empty") }
            let dom = try await Self.chromium(["--dump-dom", authed + "?tenant=\(Stack.tenant)"])
            #expect(dom.contains("tenant \(Stack.tenant)"))
            #expect(dom.contains("canary") && dom.contains("stable"), "canary vs stable table")
            let tenant = try Self.charts(in: dom)
            for chart in ["requests", "errors", "handoffs", "p95", "hops"] {
                #expect((tenant[chart] ?? 0) > 0, "the tenant's \(chart) chart is empty: \(tenant)")
            }
            try FileManager.default.createDirectory(atPath: (Self.screenshot as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            try? FileManager.default.removeItem(atPath: Self.screenshot)
            _ = try await Self.chromium(["--window-size=1400,1300", "--screenshot=\(Self.screenshot)", authed])
            let size = (try FileManager.default.attributesOfItem(atPath: Self.screenshot)[.size] as? Int) ?? 0
            #expect(size > 20_000, "screenshot \(Self.screenshot) has \(size) bytes")
        }
    }
}
