import CFerryURing
#if canImport(Glibc)
import Glibc
#endif

/// Whether `ferry mount` carries requests over io_uring rings (FUSE over io_uring, Linux 6.14+).
public enum URingMode: String, Sendable, CaseIterable {
    /// The rings when the kernel allows them (its fuse module's `enable_uring` is 1), the
    /// device loop otherwise.
    case auto
    /// The rings, or a clear error when the kernel cannot give them.
    case on
    /// The device loop only.
    case off
}

/// What this machine's kernel offers for FUSE over io_uring, read before mounting.
public enum URingSupport {
    /// The fuse module parameter that lets INIT offer FUSE_OVER_IO_URING (off by default).
    public static let switchPath = "/sys/module/fuse/parameters/enable_uring"

    /// The switch's value; nil when the kernel has none (before 6.14, or built without
    /// CONFIG_FUSE_IO_URING).
    public static func kernelSwitch() -> Bool? {
        guard let file = fopen(switchPath, "r") else { return nil }
        defer { fclose(file) }
        let c = fgetc(file)
        // Boolean module parameters read back as Y or N.
        return c == Int32(UInt8(ascii: "Y")) || c == Int32(UInt8(ascii: "1"))
    }

    /// Why the rings cannot be used here, or nil when they can (the switch is on and this
    /// process may create an io_uring).
    public static func unavailableReason() -> String? {
        switch kernelSwitch() {
        case nil:
            return "this kernel has no FUSE over io_uring (Linux 6.14 or later, CONFIG_FUSE_IO_URING)"
        case false?:
            return "FUSE over io_uring is disabled: echo 1 > \(switchPath)"
        case true?:
            let rc = ferry_uring_probe()
            if rc == 0 { return nil }
            return "io_uring_setup refused: \(String(cString: strerror(-rc)))"
                + (rc == -EPERM ? " (kernel.io_uring_disabled, or a seccomp filter around ferry)" : "")
        }
    }

    /// How many ring queues the kernel wants: one per possible CPU (it picks a request's
    /// queue by the CPU its caller runs on, and turns the rings on only once every queue has
    /// an entry).
    public static func possibleCPUs() -> Int {
        guard let file = fopen("/sys/devices/system/cpu/possible", "r") else { return max(1, sysconf(Int32(_SC_NPROCESSORS_CONF))) }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 256)
        guard fgets(&line, Int32(line.count), file) != nil else { return max(1, sysconf(Int32(_SC_NPROCESSORS_CONF))) }
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return cpuCount(inList: text) ?? max(1, sysconf(Int32(_SC_NPROCESSORS_CONF)))
    }

    /// The number of CPUs in a kernel CPU list ("0-3,8-11\n"); nil when it does not parse.
    public static func cpuCount(inList text: String) -> Int? {
        var count = 0
        for part in text.split(whereSeparator: { $0 == "," || $0 == "\n" || $0 == " " }) {
            let bounds = part.split(separator: "-")
            guard let low = Int(bounds[0]), let high = bounds.count == 2 ? Int(bounds[1]) : low,
                  bounds.count <= 2, low <= high else { return nil }
            count += high - low + 1
        }
        return count > 0 ? count : nil
    }
}
