// swift-tools-version: 6.1
import PackageDescription

// Release builds of the request-path modules carry their bodies across module boundaries,
// so the executable can specialise the generic server for its concrete driver.
let crossModule: [SwiftSetting] = [.unsafeFlags(["-cross-module-optimization"], .when(configuration: .release))]
// Swift 6 language mode (strict concurrency), target by target until the package default flips.
let swift6: [SwiftSetting] = [.swiftLanguageMode(.v6)]

// Layers look only down: FerryFUSE (wire) <- FerryCore (server + driver protocol)
// <- drivers (FerryPOSIX) and transports (FerryDevFUSE) <- the `ferry` executable.
let package = Package(
    name: "Ferry",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "ferry", targets: ["ferry"]),
        .executable(name: "ferry-conformance", targets: ["ferry-conformance"]),
        .executable(name: "ferry-churn", targets: ["ferry-churn"]),
        .executable(name: "ferry-fuzz", targets: ["ferry-fuzz"]),
        .plugin(name: "Conformance", targets: ["Conformance"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // C shims: what Swift cannot express (raw syscalls, variadics, glibc-only entry points).
        .target(name: "CFerry"),
        // <linux/fuse.h>, imported only by tests to check our wire structs against the kernel's.
        .target(name: "CLinuxFUSE"),

        // Errno, one EINTR-retrying system-call helper and an owned descriptor: what every
        // module that makes system calls shares (swift-system's role, without the dependency).
        .target(name: "FerrySystem", swiftSettings: crossModule + swift6),
        .target(name: "FerryFUSE", swiftSettings: crossModule + swift6),
        // vhost-user messages and split virtqueue layout: wire formats, no I/O.
        .target(name: "FerryVirtio", swiftSettings: swift6),
        .target(name: "FerryCore", dependencies: [
            "FerryFUSE", "FerrySystem", "CFerry",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: crossModule + swift6),
        .target(name: "FerryPOSIX", dependencies: ["FerryCore", "CFerry"], swiftSettings: crossModule + swift6),
        // libnfs and librados (librados has no pkg-config file; its module map names the library).
        .systemLibrary(name: "CNFS", pkgConfig: "libnfs", providers: [.apt(["libnfs-dev"])]),
        .systemLibrary(name: "CRados", providers: [.apt(["librados-dev"])]),
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        // Namespaces, pivot_root, capabilities, no-new-privileges and seccomp for serving processes.
        .target(name: "CFerrySandbox", linkerSettings: [.linkedLibrary("seccomp")]),
        .target(name: "FerrySandbox", dependencies: ["CFerrySandbox", "CSeccomp"]),
        // NFSv3/v4 exports through libnfs: nodes are NFS file handles.
        .target(name: "FerryNFS", dependencies: [
            "FerryCore", "CNFS", "CFerry",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: crossModule + swift6),
        // A POSIX namespace kept directly in a RADOS pool.
        .target(name: "FerryRADOS", dependencies: [
            "FerryCore", "CRados", "CFerry",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: crossModule + swift6),
        .target(name: "FerryDevFUSE", dependencies: [
            "FerryCore", "FerryFUSE", "CFerry",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swift6),
        // vhost-user-fs device back-end: socket, guest memory, virtqueues.
        .target(name: "FerryVhostUser", dependencies: [
            "FerryCore", "FerryFUSE", "FerryVirtio", "CFerry",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swift6),
        // A vhost-user-fs front-end in Swift (what QEMU and a guest kernel do), for tests
        // and `ferry bench`.
        .target(name: "FerryVhostFrontend", dependencies: ["FerryFUSE", "FerryVirtio", "FerrySystem", "CFerry"], swiftSettings: swift6),
        .target(name: "FerryConfig", dependencies: ["FerryCore", "FerrySandbox"]),
        // The commands of `ferry`, as a library so tests can drive them.
        .target(name: "FerryCLI", dependencies: [
            "FerryCore", "FerryPOSIX", "FerryNFS", "FerryRADOS", "FerryDevFUSE", "FerryVhostUser",
            "FerryVhostFrontend", "FerryConfig", "FerrySandbox",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "ferry", dependencies: ["FerryCLI"]),
        // Fuzz targets (libFuzzer via scripts/fuzz; corpus replay in FuzzCorpusTests).
        .target(name: "FerryFuzz", dependencies: [
            "FerryCore", "FerryFUSE", "FerryPOSIX", "FerryVhostUser",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swift6),
        .executableTarget(name: "ferry-fuzz", dependencies: ["FerryFuzz"], swiftSettings: swift6),
        // The POSIX conformance checks, in C so the same program runs on the host and,
        // statically linked, inside a test guest.
        .executableTarget(name: "ferry-conformance"),
        // Concurrent workers creating, renaming, linking, deleting and listing while others
        // look: C for the same reason (static in the guest too).
        .executableTarget(name: "ferry-churn"),

        .plugin(
            name: "Conformance",
            capability: .command(
                intent: .custom(verb: "conformance", description: "Mount a source with ferry and run the POSIX conformance checks on it"),
                permissions: []
            ),
            dependencies: []
        ),

        .target(name: "CMallocCounter", path: "Tests/CMallocCounter"),
        .testTarget(name: "FerryFUSETests", dependencies: ["FerryFUSE", "CLinuxFUSE"], swiftSettings: swift6),
        .testTarget(name: "FerryVirtioTests", dependencies: ["FerryVirtio"], swiftSettings: swift6),
        .testTarget(name: "FerryVhostUserTests", dependencies: [
            "FerryVhostUser", "FerryVhostFrontend", "FerryCore", "FerryFUSE", "FerryVirtio", "FerryPOSIX", "CFerry",
            "FerryTestSupport",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swift6),
        .testTarget(name: "FerryCLITests", dependencies: ["FerryCLI", "FerryTestSupport", "FerryVhostFrontend", "FerryFUSE", "CFerry",
                                                     "CFerrySandbox", "CSeccomp"]),
        .testTarget(name: "FerryConfigTests", dependencies: ["FerryConfig"]),
        .testTarget(name: "FerryCoreTests", dependencies: ["FerryCore", "FerryFUSE", "FerryPOSIX", "CMallocCounter"], swiftSettings: swift6),
        .testTarget(name: "FerryPOSIXTests", dependencies: ["FerryPOSIX", "FerryCore", "CFerry", "CFerrySandbox", "FerryTestSupport"], swiftSettings: swift6),
        // Against a real nfs-ganesha (scripts/nfs) and a real one-node Ceph cluster (scripts/ceph).
        .testTarget(name: "FuzzCorpusTests", dependencies: ["FerryFuzz", "FerryTestSupport"], swiftSettings: swift6),
        .testTarget(name: "FerryNFSTests", dependencies: ["FerryNFS", "FerryCore", "FerryFUSE", "CFerry", "FerryTestSupport",
                                                     "FerryFUSETestClient"], swiftSettings: swift6),
        .testTarget(name: "FerryRADOSTests", dependencies: ["FerryRADOS", "FerryCore", "FerryFUSE", "CFerry", "FerryTestSupport",
                                                       "FerryFUSETestClient"], swiftSettings: swift6),
        // A guest's FUSE session with a server in the test process (the backends' migration
        // tests). Apart from FerryTestSupport, which the integration suites (guests,
        // conformance) use without linking the server core.
        .target(name: "FerryFUSETestClient", dependencies: ["FerryCore", "FerryFUSE"], path: "Tests/FerryFUSETestClient", swiftSettings: swift6),
        // What the integration suites share: finding built products, running processes.
        .target(name: "FerryTestSupport", dependencies: ["FerrySystem"], path: "Tests/FerryTestSupport", swiftSettings: swift6),
        .testTarget(name: "ConformanceTests", dependencies: ["FerryTestSupport"], swiftSettings: swift6),
        // A real Linux guest under QEMU against `ferry virtiofsd` and the reference virtiofsd.
        .testTarget(name: "GuestTests", dependencies: ["FerryTestSupport"], exclude: ["README.md"], swiftSettings: swift6),
    ],
    swiftLanguageModes: [.v5]
)
