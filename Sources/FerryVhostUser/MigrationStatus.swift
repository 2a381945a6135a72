/// Where a device is in a live migration, as the front-end's messages put it: what the
/// daemon reports (`ferry exports`) so an operator sees an export being migrated. Facts
/// only; naming the phase is the reporter's business.
public struct VhostUserMigrationStatus: Sendable, Equatable {
    /// VHOST_F_LOG_ALL is agreed and a log is set (SET_LOG_BASE): the front-end is copying
    /// guest memory and the workers mark every page they write.
    public var logging = false
    /// The last device state transfer (SET_DEVICE_STATE_FD, then CHECK_DEVICE_STATE) since
    /// the rings last started; nil when there was none. A ring that starts again ends the
    /// migration as far as this device is concerned: the source resumed its guest after a
    /// failure, or the destination's guest runs.
    public var transfer: Transfer?

    public struct Transfer: Sendable, Equatable {
        public enum Direction: Sendable, Equatable { case save, load }
        public enum Outcome: Sendable, Equatable {
            /// SET_DEVICE_STATE_FD was answered; CHECK_DEVICE_STATE has not come yet.
            case inProgress
            /// CHECK_DEVICE_STATE answered 0 (loading: the state was taken).
            case succeeded
            /// Refused, or CHECK_DEVICE_STATE answered 1: the front-end fails the migration.
            case failed
        }
        public var direction: Direction
        public var outcome: Outcome
        public init(direction: Direction, outcome: Outcome) { self.direction = direction; self.outcome = outcome }
    }

    public init(logging: Bool = false, transfer: Transfer? = nil) { self.logging = logging; self.transfer = transfer }
}
