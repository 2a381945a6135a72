import Foundation

/// A value shared between a test and the threads it starts (flags, counters, logs).
/// @unchecked Sendable: `stored` is touched only with `lock` held.
public final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    public init(_ value: Value) { stored = value }
    public var value: Value { lock.lock(); defer { lock.unlock() }; return stored }
    public func update(_ change: (inout Value) -> Void) { lock.lock(); change(&stored); lock.unlock() }
}
