import FerryBackend
import FerryCore
import FerryPOSIX

/// The server of a POSIX export as a concrete type. A transport calls its handler through
/// an existential; had that been `FUSEServer<POSIXDriver>` itself, the call would land in
/// generic code compiled in FerryCore, which looks up type metadata at run time on every
/// request. Calling the server from here, where the driver type is known, lets the compiler
/// specialise the whole request path for `POSIXDriver` (FerryCore and FerryPOSIX are built
/// with cross-module optimisation in release builds; see Package.swift).
/// Other backends follow the same pattern (NFSBackend, RADOSBackend).
final class POSIXExportHandler: DriverExportHandler, MigratableHandler, Sendable {
    let server: FUSEServer<POSIXDriver>

    init(_ server: FUSEServer<POSIXDriver>) { self.server = server }

    func handle(request: UnsafeRawBufferPointer, reply: inout ReplyArea) -> ReplyDisposition {
        server.handle(request: request, reply: &reply)
    }

    func handle(request: UnsafeRawBufferPointer, payload: IOVectors, reply: inout ReplyArea) -> ReplyDisposition {
        server.handle(request: request, payload: payload, reply: &reply)
    }
}

