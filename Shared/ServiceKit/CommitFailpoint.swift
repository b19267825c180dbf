#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Fault injection for crash tests: kills the process with SIGKILL after the n-th committed batch — after
/// COMMIT and before that batch's acks, the one moment a kill from outside rarely hits (billing's and
/// analytics' `SWITCHYARD_<SERVICE>_FAILPOINT_KILL_AFTER_COMMITS`; unset in production).
public final class CommitFailpoint: Sendable {
    private let remaining: Mutex<Int>
    public init(_ commits: Int) { remaining = Mutex(commits) }

    public func committed() {
        let fire = remaining.withLock { remaining -> Bool in
            remaining -= 1
            return remaining == 0
        }
        if fire { kill(getpid(), SIGKILL) }
    }
}
