import Contracts

public enum OrchestratorNames {
    public static let producer = ServiceName.orchestrator.rawValue
}
