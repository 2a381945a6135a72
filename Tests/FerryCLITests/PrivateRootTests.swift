import FerrySandbox
import Testing

/// What a private root shows, decided before anything is mounted.
struct PrivateRootTests {
    @Test func theInnermostBindDecidesAndAPathGivenTwiceIsWritableIfEitherAsked() {
        var root = PrivateRoot()
        root.add("/srv/ferry/", writable: true)
        root.add("/etc/ferry", writable: false)
        root.add("/etc/ferry/exports/../exports/demo", writable: true)
        root.add("/run/ferry", writable: false)
        root.add("/run/ferry", writable: true)
        #expect(root.binds.map(\.path) == ["/etc/ferry", "/etc/ferry/exports/demo", "/run/ferry", "/srv/ferry"])
        #expect(root.shows("/srv/ferry/acme/home", writable: true))
        #expect(root.shows("/etc/ferry/tenants/acme.toml") && !root.shows("/etc/ferry/tenants", writable: true))
        #expect(root.shows("/etc/ferry/exports/demo/sub", writable: true))
        #expect(root.shows("/run/ferry", writable: true))
        #expect(!root.shows("/srv/ferry-other") && !root.shows("/srv") && !root.shows("/etc/passwd"))
    }
}
