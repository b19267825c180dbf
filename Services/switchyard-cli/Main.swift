import ArgumentParser
import Foundation
import Tenancy

/// `switchyard` — the admin CLI. Tenancy commands go to the tenant service as admin commands over NATS
/// (`AdminClient`); `events` reads the event subjects directly.
struct Switchyard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchyard",
        abstract: "Administer a Switchyard installation.",
        discussion: """
            Tenancy commands (tenant, plan, key, manifest, rollout, kb, demo) are admin commands answered by the \
            tenant service over NATS; they need an admin token (--admin-token or SWITCHYARD_ADMIN_TOKEN). \
            Exit codes: 0 success, 1 the command failed, 2 missing credentials, 64 usage error.
            """,
        subcommands: [
            TenantCommand.self, PlanCommand.self, KeyCommand.self, ManifestCommand.self, RolloutCommand.self,
            KnowledgeCommand.self, PriceCommand.self, UsageCommand.self, InvoiceCommand.self,
            BillingCommand.self, StatsCommand.self, AnalyticsCommand.self, EvalCommand.self, Events.self, Demo.self,
            DoctorCommand.self, BackupCommand.self, RestoreCommand.self,
        ])
}

/// Parses, runs, and turns every failure into one line on stderr and an exit code (never a stack trace).
/// Usage errors and `--help` keep argument-parser's own output and codes.
@main
enum SwitchyardMain {
    static func main() async {
        var command: any ParsableCommand
        do {
            command = try await Switchyard.asyncParseAsRoot()
        } catch {
            Switchyard.exit(withError: error)
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let failure as CLIFailure {
            fail(failure.message, code: failure.exitCode)
        } catch let failure as AdminFailure {
            fail(failure.description, code: CLIFailure.commandFailed)
        } catch let error where String(reflecting: type(of: error)).hasPrefix("ArgumentParser.") {
            // Help, clean exits and usage errors (also the ones argument-parser raises while running).
            Switchyard.exit(withError: error)
        } catch {
            fail(String(describing: error), code: CLIFailure.commandFailed)
        }
    }

    static func fail(_ message: String, code: Int32) -> Never {
        let line = message.split(whereSeparator: \.isNewline).joined(separator: " ")
        // Whatever the command printed first (a report, JSON) goes out whole before the error line.
        fflush(nil)  // every output stream
        FileHandle.standardError.write(Data("error: \(line)\n".utf8))
        Foundation.exit(code)
    }
}

/// A failure of the CLI itself (bad input file, missing credentials, NATS unreachable). The message is one line
/// and never contains tokens or passwords.
struct CLIFailure: Error, CustomStringConvertible {
    static let commandFailed: Int32 = 1
    static let missingCredentials: Int32 = 2

    var message: String
    var exitCode: Int32

    init(_ message: String, exitCode: Int32 = CLIFailure.commandFailed) {
        self.message = message
        self.exitCode = exitCode
    }

    var description: String { message }
}
