import FerryCore

/// An export's backend: which unit, with its options. What the unit knows is reached
/// through here, so nothing outside the unit switches on kinds. Opening goes through one
/// indirect call, once per export; requests never pass here.
public struct ConfiguredBackend: Sendable, Equatable, CustomStringConvertible {
    public let module: any BackendModule.Type
    /// The unit's `Options`.
    public let options: any Sendable
    private let same: @Sendable (any Sendable) -> Bool
    private let opener: @Sendable (BackendOpenContext) throws(BackendError) -> any ServedExport
    public let summary: String
    public let sourceDescription: String
    public let listing: BackendListing
    public let defaultRequestThreads: Int
    private let roots: @Sendable (Bool) -> BackendRootNeeds

    public init<M: BackendModule>(_ module: M.Type, _ options: M.Options) {
        self.module = module
        self.options = options
        same = { other in (other as? M.Options) == options }
        opener = { context throws(BackendError) in try M.open(options, context) }
        summary = M.summary(options)
        sourceDescription = M.sourceDescription(options)
        listing = M.listing(options)
        defaultRequestThreads = M.defaultRequestThreads(options)
        roots = { readOnly in M.rootNeeds(options, readOnly: readOnly) }
    }

    public var kind: String { module.kind }
    public var sandbox: BackendSandboxNeeds { module.sandbox }

    /// The options, if this is a backend of `module`.
    public func options<M: BackendModule>(of module: M.Type) -> M.Options? {
        self.module == module ? options as? M.Options : nil
    }

    public func rootNeeds(readOnly: Bool) -> BackendRootNeeds { roots(readOnly) }

    public func open(_ context: BackendOpenContext) throws(BackendError) -> any ServedExport { try opener(context) }

    public var description: String { sourceDescription }

    public static func == (a: ConfiguredBackend, b: ConfiguredBackend) -> Bool {
        a.module == b.module && a.same(b.options)
    }
}
