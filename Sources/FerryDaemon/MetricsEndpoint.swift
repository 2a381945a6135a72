import CFerry
import FerryBackend
import FerryConfig
import FerryCore
import FerryRADOSBackend
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The Prometheus text exposition of every export's counters: requests, errors and latency
/// histograms by tenant, export and operation; bytes, throttling, quota and backend counters
/// by export; and each export's state.
func renderMetrics(_ statuses: [ExportStatus]) -> String {
    var out = ""
    func family(_ name: String, _ type: String, _ help: String, _ samples: () -> Void) {
        out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        samples()
    }
    func labels(_ s: ExportStatus, _ extra: [(String, String)] = []) -> String {
        let all = [("tenant", s.tenant), ("export", s.export)] + extra
        return "{" + all.map { "\($0.0)=\"\(escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
    }
    family("ferry_export_up", "gauge", "1 when the export is listening or serving a guest, 0 when it is in error.") {
        for s in statuses {
            let up = s.state.isUp
            out += "ferry_export_up\(labels(s)) \(up ? 1 : 0)\n"
        }
    }
    family("ferry_export_guest_connected", "gauge", "1 while a VMM is connected to the export's socket.") {
        for s in statuses { out += "ferry_export_guest_connected\(labels(s)) \(s.state == .guestConnected ? 1 : 0)\n" }
    }
    family("ferry_export_migration_state", "gauge", "1 for the live-migration state the export's guest is in (none when no migration is under way).") {
        for s in statuses {
            for state in ExportMigrationState.allCases {
                out += "ferry_export_migration_state\(labels(s, [("state", state.rawValue)])) \(s.migration == state ? 1 : 0)\n"
            }
        }
    }
    family("ferry_export_lease_role", "gauge", "1 for a RADOS export's part in its namespace's single-writer lease (writer, standby, handed-over, lost, read-only).") {
        for s in statuses {
            guard let lease = s.lease else { continue }
            for role in ExportLease.roles {
                out += "ferry_export_lease_role\(labels(s, [("role", role)])) \(lease.role == role ? 1 : 0)\n"
            }
        }
    }
    let serving = statuses.filter { $0.counters != nil }
    family("ferry_requests_total", "counter", "FUSE requests answered, by operation.") {
        for s in serving { for op in s.operations ?? [] { out += "ferry_requests_total\(labels(s, [("operation", op.name)])) \(op.requests)\n" } }
    }
    family("ferry_request_errors_total", "counter", "FUSE requests answered with an error, by operation (includes backend errors).") {
        for s in serving { for op in s.operations ?? [] { out += "ferry_request_errors_total\(labels(s, [("operation", op.name)])) \(op.errors)\n" } }
    }
    family("ferry_request_duration_seconds", "histogram", "Time from a request's arrival to its reply, by operation.") {
        for s in serving {
            for op in s.operations ?? [] {
                var cumulative: UInt64 = 0
                for (i, n) in op.latencyBuckets.enumerated() {
                    cumulative += n
                    let le = ExportStatistics.bucketUpperBound(i)
                    out += "ferry_request_duration_seconds_bucket\(labels(s, [("operation", op.name), ("le", "\(le)")])) \(cumulative)\n"
                }
                out += "ferry_request_duration_seconds_bucket\(labels(s, [("operation", op.name), ("le", "+Inf")])) \(op.requests)\n"
                out += "ferry_request_duration_seconds_sum\(labels(s, [("operation", op.name)])) \(Double(op.latencySumNanoseconds) / 1e9)\n"
                out += "ferry_request_duration_seconds_count\(labels(s, [("operation", op.name)])) \(op.requests)\n"
            }
        }
    }
    let perExport: [(String, String, String, (LiveCounters) -> String?)] = [
        ("ferry_read_bytes_total", "counter", "Bytes read by the guest.", { "\($0.bytesRead)" }),
        ("ferry_written_bytes_total", "counter", "Bytes written by the guest.", { "\($0.bytesWritten)" }),
        ("ferry_open_files", "gauge", "Files and directories the guest holds open.", { "\($0.openFiles)" }),
        ("ferry_inodes", "gauge", "Inodes the guest holds (lookups not yet forgotten).", { "\($0.inodes)" }),
        ("ferry_throttled_requests_total", "counter", "Requests delayed by the export's QoS limits.", { "\($0.throttledRequests)" }),
        ("ferry_throttled_seconds_total", "counter", "Time requests spent waiting for QoS.", { "\($0.throttledSeconds)" }),
        ("ferry_quota_refusals_total", "counter", "Changes refused with EDQUOT.", { "\($0.quotaRefusals)" }),
        ("ferry_malformed_requests_total", "counter", "Requests refused as malformed.", { "\($0.malformedRequests)" }),
        ("ferry_quota_bytes_used", "gauge", "Bytes counted against the export's quota.", { $0.quotaBytesUsed.map { "\($0)" } }),
        ("ferry_quota_inodes_used", "gauge", "Inodes counted against the export's quota.", { $0.quotaInodesUsed.map { "\($0)" } }),
    ]
    for (name, type, help, value) in perExport {
        family(name, type, help) {
            for s in serving { if let v = value(s.counters!) { out += "\(name)\(labels(s)) \(v)\n" } }
        }
    }
    var backendFamilies: [String: (help: String, lines: [String])] = [:]
    var backendOrder: [String] = []
    for s in serving {
        for counter in s.counters!.backend {
            let name = "ferry_backend_\(counter.name)_total"
            if backendFamilies[name] == nil { backendOrder.append(name); backendFamilies[name] = (counter.help, []) }
            backendFamilies[name]!.lines.append("\(name)\(labels(s)) \(counter.value)\n")
        }
    }
    for name in backendOrder {
        family(name, "counter", backendFamilies[name]!.help) { out += backendFamilies[name]!.lines.joined() }
    }
    return out
}

/// A label value: backslash, double quote and newline escaped, as the text format wants.
private func escapeLabel(_ value: String) -> String { backslashEscaped(value) }
