// swift-tools-version:6.1
import PackageDescription

// Layering (docs/ARCHITECTURE.md "Layering", docs/adr/0001 and 0010):
//   C system libraries (CNats, CProtobufC, CLibPQ, COpenSSL)
//     -> SwitchyardProtoC (committed protoc-c output)
//     -> Schemas / Messaging / Storage / Telemetry / Security   (Messaging knows no payloads or tenants)
//     -> Contracts (subjects, event kinds, headers, streams, consumers, KV buckets, reply subjects, metric names)
//     -> Tenancy (KV mirror reader; no libpq) / KnowledgeBase (PostgreSQL)
//     -> ServiceKit (the service scaffold; no libpq) / ServiceKitPostgres (its PostgreSQL piece)
//     -> Services/* (thin executables over <Service>Core libraries)
// No service imports a C* module, and no service imports another service. api-gateway and router link no
// libpq: nothing on their dependency path depends on Storage.

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "switchyard",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Schemas", targets: ["Schemas"]),
        .library(name: "Messaging", targets: ["Messaging"]),
        .library(name: "Storage", targets: ["Storage"]),
        .library(name: "Telemetry", targets: ["Telemetry"]),
        .library(name: "Security", targets: ["Security"]),
        .library(name: "Contracts", targets: ["Contracts"]),
        .library(name: "ServiceKit", targets: ["ServiceKit"]),
        .library(name: "ServiceKitPostgres", targets: ["ServiceKitPostgres"]),
        .library(name: "TestKit", targets: ["TestKit"]),
        .executable(name: "shared-bench", targets: ["SharedBench"]),
        .executable(name: "fake-upstream", targets: ["FakeUpstream"]),
        .executable(name: "ingest-bench", targets: ["IngestBench"]),
        .executable(name: "chaos", targets: ["Chaos"]),
        .executable(name: "crash-consumer", targets: ["CrashConsumer"]),
        .executable(name: "api-gateway", targets: ["api-gateway"]),
        .executable(name: "router", targets: ["router"]),
        .executable(name: "orchestrator", targets: ["orchestrator"]),
        .executable(name: "tenant", targets: ["tenant"]),
        .executable(name: "billing", targets: ["billing"]),
        .executable(name: "analytics", targets: ["analytics"]),
        .executable(name: "eval", targets: ["eval"]),
        .executable(name: "switchyard", targets: ["switchyard"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.1.0"),
        .package(url: "https://github.com/swift-otel/swift-w3c-trace-context.git", from: "1.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.20.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.0"),
        // Traces over OTLP/HTTP only: the gRPC exporter (and its dependencies) stays out of the build.
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
    ],
    targets: [
        // MARK: C libraries (system, via pkg-config)
        .systemLibrary(name: "CNats", path: "Shared/CNats", pkgConfig: "libnats",
                       providers: [.apt(["libnats-dev"])]),
        .systemLibrary(name: "CProtobufC", path: "Shared/CProtobufC", pkgConfig: "libprotobuf-c",
                       providers: [.apt(["libprotobuf-c-dev"])]),
        .systemLibrary(name: "CLibPQ", path: "Shared/CLibPQ", pkgConfig: "libpq",
                       providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "COpenSSL", path: "Shared/COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),

        // MARK: generated protobuf-c code (make proto)
        .target(name: "SwitchyardProtoC", dependencies: ["CProtobufC"], path: "Shared/SwitchyardProtoC"),

        // MARK: Swift layers
        .target(name: "Schemas", dependencies: ["SwitchyardProtoC", "CProtobufC"],
                path: "Shared/Schemas", swiftSettings: swiftSettings),
        .target(name: "Messaging", dependencies: [
            "CNats",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Tracing", package: "swift-distributed-tracing"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Shared/Messaging", swiftSettings: swiftSettings),
        .target(name: "Storage", dependencies: [
            "CLibPQ",
            .product(name: "Logging", package: "swift-log"),
        ], path: "Shared/Storage", swiftSettings: swiftSettings),
        .target(name: "Telemetry", dependencies: [
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Tracing", package: "swift-distributed-tracing"),
            .product(name: "W3CTraceContext", package: "swift-w3c-trace-context"),
        ], path: "Shared/Telemetry", swiftSettings: swiftSettings),
        .target(name: "Security", dependencies: ["COpenSSL"],
                path: "Shared/Security", swiftSettings: swiftSettings),
        .target(name: "Contracts", dependencies: ["Messaging", "Schemas", "Telemetry"],
                path: "Shared/Contracts", swiftSettings: swiftSettings),
        .target(name: "Tenancy", dependencies: [
            "Messaging", "Schemas", "Security", "Contracts",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Shared/Tenancy", swiftSettings: swiftSettings),
        .target(name: "KnowledgeBase", dependencies: [
            "Schemas", "Storage",
            .product(name: "Logging", package: "swift-log"),
        ], path: "Shared/KnowledgeBase", swiftSettings: swiftSettings),
        .target(name: "ServiceKit", dependencies: [
            "Telemetry", "Messaging", "Schemas", "Security", "Contracts", "Tenancy",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "OTel", package: "swift-otel"),
            .product(name: "Tracing", package: "swift-distributed-tracing"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
        ], path: "Shared/ServiceKit", swiftSettings: swiftSettings),
        .target(name: "ServiceKitPostgres", dependencies: [
            "ServiceKit", "Storage", "Messaging", "Tenancy",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Shared/ServiceKitPostgres", swiftSettings: swiftSettings),
        .target(name: "TestKit", dependencies: [
            .product(name: "Logging", package: "swift-log"),
        ], path: "Shared/TestKit", swiftSettings: swiftSettings),

        // MARK: services (thin executables over <Service>Core libraries)
        .target(name: "GatewayCore", dependencies: [
            "ServiceKit", "Contracts", "Tenancy", "Messaging", "Schemas", "Security", "Telemetry",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Tracing", package: "swift-distributed-tracing"),
        ], path: "Services/api-gateway/GatewayCore", swiftSettings: swiftSettings),
        .executableTarget(name: "api-gateway", dependencies: ["GatewayCore", "ServiceKit"],
                          path: "Services/api-gateway/App", swiftSettings: swiftSettings),
        .target(name: "RouterCore", dependencies: [
            "ServiceKit", "Contracts", "Tenancy", "Messaging", "Schemas", "Security", "Telemetry",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Tracing", package: "swift-distributed-tracing"),
        ], path: "Services/router/RouterCore", swiftSettings: swiftSettings),
        .executableTarget(name: "router", dependencies: ["RouterCore", "ServiceKit"],
                          path: "Services/router/App", swiftSettings: swiftSettings),
        .target(name: "OrchestratorCore", dependencies: [
            "ServiceKit", "ServiceKitPostgres", "Contracts", "Tenancy", "KnowledgeBase", "Messaging", "Schemas",
            "Storage", "Security", "Telemetry",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Tracing", package: "swift-distributed-tracing"),
        ], path: "Services/orchestrator/OrchestratorCore", swiftSettings: swiftSettings),
        .executableTarget(name: "orchestrator", dependencies: ["OrchestratorCore", "ServiceKit"],
                          path: "Services/orchestrator/App", swiftSettings: swiftSettings),

        .target(name: "TenantCore", dependencies: [
            "ServiceKit", "ServiceKitPostgres", "Contracts", "Tenancy", "KnowledgeBase", "Messaging", "Schemas",
            "Storage", "Security", "Telemetry",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Services/tenant/TenantCore", swiftSettings: swiftSettings),
        .executableTarget(name: "tenant", dependencies: ["TenantCore", "ServiceKit"],
                          path: "Services/tenant/App", swiftSettings: swiftSettings),

        .target(name: "BillingCore", dependencies: [
            "ServiceKit", "ServiceKitPostgres", "Contracts", "Tenancy", "Messaging", "Schemas", "Storage", "Telemetry",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Services/billing/BillingCore", swiftSettings: swiftSettings),
        .executableTarget(name: "billing", dependencies: ["BillingCore", "ServiceKit"],
                          path: "Services/billing/App", swiftSettings: swiftSettings),

        .target(name: "AnalyticsCore", dependencies: [
            "ServiceKit", "ServiceKitPostgres", "Contracts", "Tenancy", "Messaging", "Schemas", "Storage", "Telemetry",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Services/analytics/AnalyticsCore", swiftSettings: swiftSettings),
        .executableTarget(name: "analytics", dependencies: ["AnalyticsCore", "ServiceKit"],
                          path: "Services/analytics/App", swiftSettings: swiftSettings),

        .target(name: "EvalCore", dependencies: [
            "ServiceKit", "ServiceKitPostgres", "Contracts", "Tenancy", "Messaging", "Schemas", "Storage", "Telemetry",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Yams", package: "Yams"),
        ], path: "Services/eval/EvalCore", swiftSettings: swiftSettings),
        .executableTarget(name: "eval", dependencies: ["EvalCore", "ServiceKit"],
                          path: "Services/eval/App", swiftSettings: swiftSettings),

        .executableTarget(name: "switchyard", dependencies: [
            "Messaging", "Schemas", "Contracts", "Tenancy", "Security",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Yams", package: "Yams"),
        ], path: "Services/switchyard-cli", swiftSettings: swiftSettings),

        // MARK: benchmarks
        .executableTarget(name: "SharedBench", dependencies: [
            "Schemas", "Messaging", "Storage", "TestKit",
        ], path: "Benchmarks/SharedBench", swiftSettings: swiftSettings),

        .executableTarget(name: "IngestBench", dependencies: [
            "Schemas", "Messaging", "Storage", "Contracts", "Tenancy", "TestKit",
            .product(name: "Logging", package: "swift-log"),
        ], path: "Benchmarks/IngestBench", swiftSettings: swiftSettings),

        .executableTarget(name: "Chaos", dependencies: [
            "Schemas", "Messaging", "Storage", "Contracts", "Tenancy", "TestKit", "KnowledgeBase",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Logging", package: "swift-log"),
        ], path: "Benchmarks/Chaos", swiftSettings: swiftSettings),

        .executableTarget(name: "FakeUpstream", dependencies: [
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
        ], path: "Benchmarks/FakeUpstream", swiftSettings: swiftSettings),

        // MARK: tests
        // A consumer whose handler kills its process on one message: the max-deliveries test's real binary.
        .executableTarget(name: "CrashConsumer", dependencies: [
            "Messaging",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Tests/CrashConsumer", swiftSettings: swiftSettings),
        .testTarget(name: "GatewayCoreTests", dependencies: ["GatewayCore", "Contracts", "Tenancy", "TestKit"], swiftSettings: swiftSettings),
        .testTarget(name: "RouterCoreTests", dependencies: ["RouterCore", "TestKit"], swiftSettings: swiftSettings),
        .testTarget(name: "OrchestratorCoreTests", dependencies: ["OrchestratorCore", "KnowledgeBase", "TestKit"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "EvalTests", dependencies: [
            "EvalCore", "Schemas", "Messaging", "Storage", "Tenancy", "TestKit", "ServiceKit", "Contracts",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .testTarget(name: "ChatPathTests", dependencies: [
            "GatewayCore", "RouterCore", "OrchestratorCore", "BillingCore", "AnalyticsCore", "EvalCore", "Tenancy", "TestKit",
            "ServiceKit", "Messaging", "Schemas",
            "Storage", "Telemetry", "Contracts", "KnowledgeBase",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], swiftSettings: swiftSettings),
        .testTarget(name: "TenantServiceTests", dependencies: [
            "TenantCore", "GatewayCore", "RouterCore", "OrchestratorCore", "Tenancy", "TestKit", "ServiceKit",
            "Messaging", "Schemas", "Storage", "Telemetry", "Contracts", "KnowledgeBase",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        .testTarget(name: "BillingTests", dependencies: [
            "BillingCore", "Tenancy", "TestKit", "ServiceKit", "Messaging", "Schemas", "Storage", "Telemetry",
            "Contracts",
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        .testTarget(name: "SchemasTests", dependencies: ["Schemas"], swiftSettings: swiftSettings),
        .testTarget(name: "MessagingTests", dependencies: ["Messaging", "Telemetry", "TestKit", "Contracts", "Tenancy"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "StorageTests", dependencies: ["Storage", "TestKit"], swiftSettings: swiftSettings),
        .testTarget(name: "TelemetryTests", dependencies: ["Telemetry", "Security", "Contracts"], swiftSettings: swiftSettings),
        .testTarget(name: "ServiceKitTests", dependencies: [
            "ServiceKit", "ServiceKitPostgres", "Contracts", "Tenancy", "TestKit", "Messaging", "Storage", "Schemas",
            "Telemetry",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTesting", package: "hummingbird"),
        ], swiftSettings: swiftSettings),
    ]
)
