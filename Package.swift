// swift-tools-version: 6.1
import PackageDescription

// Release builds of the request-path modules carry their bodies across module boundaries,
// so the executable can specialise the generic server for its concrete driver.
let crossModule: [SwiftSetting] = [.unsafeFlags(["-cross-module-optimization"], .when(configuration: .release))]

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
        // FUSE over io_uring: raw io_uring calls, the mapped rings and the kernel's FUSE ring
        // structures (Linux 6.14+), which Debian 12's headers do not have.
        .target(name: "CFerryURing"),

        // Errno, one EINTR-retrying system-call helper and an owned descriptor: what every
        // module that makes system calls shares (swift-system's role, without the dependency).
        .target(name: "FerrySystem", swiftSettings: crossModule),
        .target(name: "FerryFUSE", swiftSettings: crossModule),
        // vhost-user messages and split virtqueue layout: wire formats, no I/O.
        .target(name: "FerryVirtio"),
        .target(name: "FerryCore", dependencies: [
            "FerryFUSE", "FerrySystem", "CFerry",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: crossModule),
        .target(name: "FerryPOSIX", dependencies: ["FerryCore", "CFerry"], swiftSettings: crossModule),
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
        ], swiftSettings: crossModule),
        // A POSIX namespace kept directly in a RADOS pool.
        .target(name: "FerryRADOS", dependencies: [
            "FerryCore", "CRados", "CFerry",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: crossModule),
        .target(name: "FerryDevFUSE", dependencies: [
            "FerryCore", "FerryFUSE", "CFerry", "CFerryURing",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // vhost-user-fs device back-end: socket, guest memory, virtqueues.
        .target(name: "FerryVhostUser", dependencies: [
            "FerryCore", "FerryFUSE", "FerryVirtio", "CFerry",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // A vhost-user-fs front-end in Swift (what QEMU and a guest kernel do), for tests
        // and `ferry bench`.
        .target(name: "FerryVhostFrontend", dependencies: ["FerryFUSE", "FerryVirtio", "FerrySystem", "CFerry"]),
        // What a backend is as a unit (BackendModule), the reader of its configuration table
        // (TOML with file:line:column), and the concrete-handler pattern of the request path.
        .target(name: "FerryBackend", dependencies: [
            "FerryCore", "FerrySandbox",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // One unit per backend: its options, sandbox needs, defaults and opening an export.
        .target(name: "FerryPOSIXBackend", dependencies: ["FerryBackend", "FerryCore", "FerryPOSIX", "FerrySandbox"],
                swiftSettings: crossModule),
        .target(name: "FerryNFSBackend", dependencies: ["FerryBackend", "FerryCore", "FerryNFS", "FerrySandbox",
                                                        .product(name: "Logging", package: "swift-log")],
                swiftSettings: crossModule),
        .target(name: "FerryRADOSBackend", dependencies: ["FerryBackend", "FerryCore", "FerryRADOS", "FerrySandbox",
                                                          .product(name: "Logging", package: "swift-log")],
                swiftSettings: crossModule),
        // The registry: one line per backend; what configuration, sandbox set-up and daemon ask.
        .target(name: "FerryBackends", dependencies: ["FerryBackend", "FerryPOSIXBackend", "FerryNFSBackend", "FerryRADOSBackend"]),
        .target(name: "FerryConfig", dependencies: ["FerryCore", "FerrySandbox", "FerryBackend", "FerryBackends"]),
        // `ferry serve` as a library: the daemon, its exports' lifecycle and reloads, the control
        // socket and metrics endpoint, opening a backend for serving, and the process-wide set-up
        // (umask, signals, rlimits, the sandbox) that only executables call.
        .target(name: "FerryDaemon", dependencies: [
            "FerryCore", "FerryPOSIX", "FerryNFS", "FerryRADOS", "FerryVhostUser", "FerryConfig", "FerrySandbox", "CFerry",
            "FerryBackend", "FerryBackends", "FerryPOSIXBackend", "FerryNFSBackend", "FerryRADOSBackend",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The commands of `ferry` (argument parsing and printing), as a library so tests can drive them.
        .target(name: "FerryCLI", dependencies: [
            "FerryCore", "FerryFUSE", "FerryPOSIX", "FerryNFS", "FerryRADOS", "FerryDevFUSE", "FerryVhostUser",
            "FerryVhostFrontend", "FerryConfig", "FerrySandbox", "FerryDaemon",
            "FerryBackend", "FerryBackends", "FerryPOSIXBackend", "FerryNFSBackend", "FerryRADOSBackend",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "ferry", dependencies: ["FerryCLI"]),
        // Fuzz targets (libFuzzer via scripts/fuzz; corpus replay in FuzzCorpusTests).
        .target(name: "FerryFuzz", dependencies: [
            "FerryCore", "FerryFUSE", "FerryPOSIX", "FerryVhostUser",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "ferry-fuzz", dependencies: ["FerryFuzz"]),
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
        .testTarget(name: "FerryFUSETests", dependencies: ["FerryFUSE", "CLinuxFUSE"]),
        .testTarget(name: "FerryVirtioTests", dependencies: ["FerryVirtio"]),
        .testTarget(name: "FerryVhostUserTests", dependencies: [
            "FerryVhostUser", "FerryVhostFrontend", "FerryCore", "FerryFUSE", "FerryVirtio", "FerryPOSIX", "CFerry",
            "FerryTestSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "FerryCLITests", dependencies: ["FerryCLI", "FerryDaemon", "FerryTestSupport", "FerryVhostFrontend", "FerryFUSE", "CFerry",
                                                     "CFerrySandbox", "CSeccomp"]),
        .testTarget(name: "FerryConfigTests", dependencies: ["FerryConfig", "FerryBackend", "FerryBackends", "FerryNFSBackend", "FerryPOSIXBackend", "FerryRADOSBackend"]),
        .testTarget(name: "FerryCoreTests", dependencies: ["FerryCore", "FerryFUSE", "FerryPOSIX", "CMallocCounter"]),
        .testTarget(name: "FerryPOSIXTests", dependencies: ["FerryPOSIX", "FerryCore", "CFerry", "CFerrySandbox", "FerryTestSupport"]),
        // Against a real nfs-ganesha (scripts/nfs) and a real one-node Ceph cluster (scripts/ceph).
        .testTarget(name: "FuzzCorpusTests", dependencies: ["FerryFuzz", "FerryTestSupport"]),
        .testTarget(name: "FerryNFSTests", dependencies: ["FerryNFS", "FerryCore", "FerryFUSE", "CFerry", "FerryTestSupport",
                                                     "FerryFUSETestClient"]),
        .testTarget(name: "FerryRADOSTests", dependencies: ["FerryRADOS", "FerryCore", "FerryFUSE", "CFerry", "FerryTestSupport",
                                                       "FerryFUSETestClient"]),
        // A guest's FUSE session with a server in the test process (the backends' migration
        // tests). Apart from FerryTestSupport, which the integration suites (guests,
        // conformance) use without linking the server core.
        .target(name: "FerryFUSETestClient", dependencies: ["FerryCore", "FerryFUSE"], path: "Tests/FerryFUSETestClient"),
        // What the integration suites share: finding built products, running processes.
        .target(name: "FerryTestSupport", dependencies: ["FerrySystem", "CFerry"], path: "Tests/FerryTestSupport"),
        .testTarget(name: "ConformanceTests", dependencies: ["FerryTestSupport"]),
        // A backend defined in a test (in memory), registered with one line and served to a
        // real guest by the daemon as a library: the proof that a backend is one unit.
        .testTarget(name: "BackendUnitTests", dependencies: [
            "FerryBackend", "FerryBackends", "FerryConfig", "FerryCore", "FerryDaemon", "FerryTestSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // A real Linux guest under QEMU against `ferry virtiofsd` and the reference virtiofsd.
        .testTarget(name: "GuestTests", dependencies: ["FerryTestSupport"], exclude: ["README.md"]),
    ],
    swiftLanguageModes: [.v6]
)
