// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "sinkhole",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "sinkhole", targets: ["sinkhole"]),
        .library(name: "SinkholeCore", targets: ["SinkholeCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // Query history for retro-hunts (SQLite through GRDB; Debian: libsqlite3-dev).
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
    ],
    targets: [
        // libldns, found through pkg-config (Debian: libldns-dev).
        .systemLibrary(
            name: "CLdns",
            pkgConfig: "ldns",
            providers: [.apt(["libldns-dev"])]
        ),
        // zlib (Debian: zlib1g-dev), for gzip-compressed rotated logs.
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        // recvmmsg/sendmmsg for the UDP listener (glibc declares them only under _GNU_SOURCE).
        .target(name: "CSinkholeNet"),
        .target(
            name: "SinkholeCore",
            dependencies: [
                "CLdns",
                "CZlib",
                "CSinkholeNet",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        .executableTarget(
            name: "sinkhole",
            dependencies: [
                "SinkholeCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // posix_spawn and a deadline-bounded waitpid for the tests' child processes.
        .target(name: "CSinkholeTestSupport"),
        .target(
            name: "SinkholeTestSupport",
            dependencies: ["SinkholeCore", "CLdns", "CSinkholeTestSupport"]
        ),
        .testTarget(
            name: "SinkholeCoreTests",
            dependencies: ["SinkholeCore", "SinkholeTestSupport", "CLdns",
                           .product(name: "Prometheus", package: "swift-prometheus")]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["SinkholeCore", "SinkholeTestSupport", "CLdns"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
