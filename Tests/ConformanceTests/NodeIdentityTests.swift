import Foundation
import FerryTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Node identity through a real `ferry mount` under real concurrent work: processes that
/// build and remove trees, and directories removed while a process still stands in them, so
/// the host (ext4 here) gives their inode numbers to new files while the kernel still holds
/// the old nodes. With the default descriptor budget and with none at all (every node held
/// by file handle alone, which pins nothing on the host).
@Suite("Node identity through ferry mount", .serialized,
       .requires(.root, .devFUSE))
struct NodeIdentityThroughFerryMount {
    static let budgets = ["default", "0"]

    static func mount(budget: String) throws -> FerryMount {
        try FerryMount(extraArguments: budget == "default" ? [] : ["--max-cached-fds", budget])
    }

    /// Runs `script` with `sh -c`, its arguments after it; output and errors merged.
    static func sh(_ script: String, _ arguments: [String]) throws -> ProcessOutput {
        try runToCompletion("/bin/sh", ["-c", script, "sh"] + arguments)
    }

    /// Creates `path` (which must not exist) holding `text`, with plain system calls.
    static func writeNew(_ path: String, _ text: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return text.withCString { write(fd, $0, strlen($0)) } == text.utf8.count
    }

    /// Lines of `output` other than the "No such file or directory" a racing reader may see.
    static func unexpectedLines(_ output: String) -> [Substring] {
        output.split(separator: "\n").filter { !$0.contains("No such file or directory") }
    }

    /// Four processes, each building a 20 × 20 tree (20 directories of 20 files) and removing
    /// it with `rm -rf`, three times over: every `rm` succeeds and nothing is left behind.
    static let treeWorkers = #"""
        M=$1
        worker() {
          p=$1; r=0
          while [ $r -lt 3 ]; do
            r=$((r+1)); t=$M/tree$p
            mkdir "$t" || return 1
            i=0
            while [ $i -lt 20 ]; do
              i=$((i+1)); mkdir "$t/d$i" || return 1
              j=0
              while [ $j -lt 20 ]; do j=$((j+1)); : > "$t/d$i/f$j" || return 1; done
            done
            rm -rf "$t" || { echo "worker $p round $r: rm -rf failed"; return 1; }
            if [ -e "$t" ]; then echo "worker $p round $r: left behind:"; find "$t" | head -5; return 1; fi
          done
        }
        pids=""
        for p in 1 2 3 4; do worker $p & pids="$pids $!"; done
        status=0
        for pid in $pids; do wait $pid || status=1; done
        exit $status
        """#

    @Test("Concurrent tree builds and rm -rf leave nothing behind", .timeLimit(.minutes(10)), arguments: budgets)
    func concurrentTreesAreRemovedCompletely(budget: String) throws {
        let mount = try Self.mount(budget: budget)
        defer { mount.stop() }
        let result = try Self.sh(Self.treeWorkers, [mount.mountpoint])
        #expect(result.succeeded && result.output.isEmpty, "budget \(budget):\n\(result.output)\nferry:\n\(mount.log)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: mount.mountpoint).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: mount.source).isEmpty)
    }

    /// Three processes each remove the directory they stand in (the kernel keeps that node:
    /// it is their cwd) and at once make a new directory and a file in it, which the host
    /// gives the freed number; two more list and stat the same directories all along.
    /// Nothing may fail but a name a reader raced with a removal.
    static let churnWorkers = #"""
        M=$1
        churn() {
          d=$M/w$1; i=0
          mkdir "$d" || return 1
          while [ $i -lt 40 ]; do
            i=$((i+1))
            mkdir "$d/held" && cd "$d/held" && rmdir "$d/held" || { echo "churn $1/$i: held"; return 1; }
            mkdir "$d/new" || { echo "churn $1/$i: mkdir new"; return 1; }
            echo "$1.$i" > "$d/new/f" || { echo "churn $1/$i: create in new"; return 1; }
            [ "$(cat "$d/new/f")" = "$1.$i" ] || { echo "churn $1/$i: read back"; return 1; }
            rm "$d/new/f" && rmdir "$d/new" || { echo "churn $1/$i: remove"; return 1; }
            cd "$M"
          done
          echo done > "$M/finished$1"
        }
        look() {
          n=0
          while [ $n -lt 2000 ] && { [ ! -e "$M/finished1" ] || [ ! -e "$M/finished2" ] || [ ! -e "$M/finished3" ]; }; do
            n=$((n+1))
            ls -lR "$M" > /dev/null
            for w in 1 2 3; do stat "$M/w$w/new" "$M/w$w/new/f" > /dev/null; done
            if [ -e "$M/stop" ]; then return 1; fi
          done
        }
        pids=""
        for p in 1 2 3; do (churn $p || : > "$M/stop"; : > "$M/finished$p") & pids="$pids $!"; done
        look 2>&1 & l1=$!
        look 2>&1 & l2=$!
        status=0
        for pid in $pids; do wait $pid || status=1; done
        wait $l1; wait $l2
        [ -e "$M/stop" ] && status=1
        exit $status
        """#

    @Test("Directories removed while held and their numbers reused stay separate nodes", .timeLimit(.minutes(10)),
          arguments: budgets)
    func churnOnReusedInodeNumbers(budget: String) throws {
        let mount = try Self.mount(budget: budget)
        defer { mount.stop() }
        let result = try Self.sh(Self.churnWorkers, [mount.mountpoint])
        let unexpected = Self.unexpectedLines(result.output)
        #expect(result.succeeded && unexpected.isEmpty,
                "budget \(budget):\n\(unexpected.joined(separator: "\n"))\nferry:\n\(mount.log)")
    }

    /// The test process holds an O_PATH descriptor on a node (the kernel keeps it; ferry
    /// sees no OPEN), removes its name, then makes new entries until the host reuses the
    /// number, and works in the one that did. Both ways round: file to directory, directory
    /// to file.
    @Test("A node held by O_PATH does not capture the file that reuses its inode number",
          .timeLimit(.minutes(10)), arguments: ["file", "directory"])
    func heldNodeAndReusedNumber(oldKind: String) throws {
        // On an ext4 of its own: on the shared /tmp another test's files take the number.
        let ext4 = try PrivateExt4()
        defer { ext4.remove() }
        let mount = try FerryMount(source: ext4.path, extraArguments: ["--max-cached-fds", "0"])
        defer { mount.stop() }
        let m = mount.mountpoint, s = mount.source
        for trial in 0..<5 {
            let old = m + "/old\(trial)"
            if oldKind == "file" {
                try #require(Self.writeNew(old, "old"), "creating \(old): \(String(cString: strerror(errno)))")
            } else {
                try #require(mkdir(old, 0o755) == 0)
            }
            var st = stat()
            try #require(lstat(s + "/old\(trial)", &st) == 0)
            let number = st.st_ino
            let holder = open(old, 0o10000000)  // O_PATH, which Glibc does not export to Swift
            try #require(holder >= 0)
            defer { close(holder) }
            try #require((oldKind == "file" ? unlink(old) : rmdir(old)) == 0)

            var reused: String?
            var made: [String] = []
            for i in 0..<2048 where reused == nil {
                let name = "new\(trial).\(i)"
                // Directories replace a file, files a directory: the kind changes too.
                if oldKind == "file" {
                    try #require(mkdir(m + "/" + name, 0o755) == 0, "mkdir \(name): \(String(cString: strerror(errno)))")
                } else {
                    try #require(Self.writeNew(m + "/" + name, name), "creating \(name): \(String(cString: strerror(errno)))")
                }
                made.append(name)
                if lstat(s + "/" + name, &st) == 0 && st.st_ino == number { reused = name }
            }
            let name = try #require(reused, "the host never reused inode \(number) (needs ext4, as /tmp is here)")
            if oldKind == "file" {
                let inside = m + "/" + name + "/inside"
                #expect(Self.writeNew(inside, "x"), "creating \(inside): \(String(cString: strerror(errno)))")
                #expect(unlink(inside) == 0)
            } else {
                let read = try? String(contentsOfFile: m + "/" + name, encoding: .utf8)
                #expect(read == name, "reading \(name) gave \(String(describing: read))")
            }
            for made in made { _ = remove(m + "/" + made) }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: m).isEmpty)
    }
}
