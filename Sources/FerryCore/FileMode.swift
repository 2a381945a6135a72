/// File type and mode bits as `UInt32`, for drivers that build or test `st_mode` values
/// (Glibc's `S_IF*` macros come in as `Int32`, and ambiguously when CFerry is imported too).
public enum FileMode {
    /// `S_IFMT`: the type bits.
    public static let typeMask: UInt32 = 0o170000
    public static let directory: UInt32 = 0o040000
    public static let regular: UInt32 = 0o100000
    public static let symlink: UInt32 = 0o120000
    public static let setUID: UInt32 = 0o4000
    public static let setGID: UInt32 = 0o2000
    public static let groupExecute: UInt32 = 0o0010
}
