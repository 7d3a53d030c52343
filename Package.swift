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
    ],
    targets: [
        // libldns, found through pkg-config (Debian: libldns-dev).
        .systemLibrary(
            name: "CLdns",
            pkgConfig: "ldns",
            providers: [.apt(["libldns-dev"])]
        ),
        .target(
            name: "SinkholeCore",
            dependencies: [
                "CLdns",
                .product(name: "Logging", package: "swift-log"),
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
        .target(
            name: "SinkholeTestSupport",
            dependencies: ["SinkholeCore", "CLdns"]
        ),
        .testTarget(
            name: "SinkholeCoreTests",
            dependencies: ["SinkholeCore", "SinkholeTestSupport", "CLdns"]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["SinkholeCore", "SinkholeTestSupport", "CLdns"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
