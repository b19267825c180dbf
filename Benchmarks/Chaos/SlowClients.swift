import Foundation
import TestKit

/// `count` hostile connections to `port`: half send a request line and then one header line a second forever
/// (slow-loris), half connect and send nothing. Returns, for each kind, how long the server took to close them
/// (seconds from the connection's first byte, or from its connect for a silent one), or nil for one still open
/// after `limit`. One thread, non-blocking sockets and poll(2).
func slowClients(port: Int, count: Int, limit: Duration)
    async -> (trickling: [Double?], silent: [Double?], answers: [String: Int])
{
    await withCheckedContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(returning: runSlowClients(port: port, count: count, limit: limit))
        }
    }
}

private func runSlowClients(port: Int, count: Int, limit: Duration)
    -> (trickling: [Double?], silent: [Double?], answers: [String: Int])
{
    let started = Date()
    let trickles = { (index: Int) in index % 2 == 0 }
    var fds: [Int32] = []
    var since: [Date] = []
    for index in 0..<count {
        guard let fd = connectedSocket(port: port) else { break }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        fds.append(fd)
        if trickles(index) { _ = write(fd, "GET /v1/models HTTP/1.1\r\nHost: x\r\n") }
        since.append(Date())
    }
    defer { for fd in fds { close(fd) } }
    var closedAfter = [Double?](repeating: nil, count: fds.count)
    /// The status line each connection got before it was closed ("" when none).
    var firstLines = [String](repeating: "", count: fds.count)
    var lastTrickle = Date()
    var buffer = [UInt8](repeating: 0, count: 4096)
    let deadline = started.addingTimeInterval(Double(limit.components.seconds))
    while Date() < deadline && closedAfter.contains(where: { $0 == nil }) {
        var polls = fds.enumerated().filter { closedAfter[$0.offset] == nil }
            .map { pollfd(fd: $0.element, events: Int16(POLLIN), revents: 0) }
        _ = poll(&polls, nfds_t(polls.count), 200)
        for entry in polls where entry.revents != 0 {
            guard let index = fds.firstIndex(of: entry.fd) else { continue }
            // Drain what the server sent (a 408); a read of 0 or an error means it closed the connection.
            while true {
                let read = recv(entry.fd, &buffer, buffer.count, 0)
                if read > 0 {
                    if firstLines[index].isEmpty {
                        let text = String(decoding: buffer[0..<read], as: UTF8.self)
                        firstLines[index] = String(text.prefix { !$0.isNewline })
                    }
                    continue
                }
                if read == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) {
                    closedAfter[index] = Date().timeIntervalSince(since[index])
                }
                break
            }
        }
        if Date().timeIntervalSince(lastTrickle) >= 1 {
            lastTrickle = Date()
            for (index, fd) in fds.enumerated() where trickles(index) && closedAfter[index] == nil {
                _ = write(fd, "X-Slow: 1\r\n")
            }
        }
    }
    let trickling = closedAfter.enumerated().filter { trickles($0.offset) }.map(\.element)
    let silent = closedAfter.enumerated().filter { !trickles($0.offset) }.map(\.element)
    var answers: [String: Int] = [:]
    for (index, line) in firstLines.enumerated() {
        answers["\(trickles(index) ? "trickling" : "silent"): \(line.isEmpty ? "closed without an answer" : line)", default: 0] += 1
    }
    return (trickling, silent, answers)
}

/// Sends all of `text` (non-blocking socket; a few bytes always fit).
private func write(_ fd: Int32, _ text: String) -> Bool {
    let bytes = Array(text.utf8)
    return send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count
}
