import FerryBackend
import Testing
@testable import FerryConfig

private func parse(_ text: String) throws -> TOMLTable { try TOML.parse(text) }

/// The error a document fails with, as "LINE:COLUMN: message".
private func failure(_ text: String) -> String? {
    do {
        _ = try TOML.parse(text)
        return nil
    } catch {
        return error.description
    }
}

private func string(_ t: TOMLTable, _ key: String) -> String? {
    if case .string(let s)? = t[key]?.item.value { return s }
    return nil
}

private func integer(_ t: TOMLTable, _ key: String) -> Int64? {
    if case .integer(let v)? = t[key]?.item.value { return v }
    return nil
}

private func table(_ t: TOMLTable, _ key: String) -> TOMLTable? {
    if case .table(let v)? = t[key]?.item.value { return v }
    return nil
}

@Suite struct TOMLParserTests {
    @Test func valuesOfEveryKind() throws {
        let doc = try parse("""
            # comment
            bare = "basic \\"quoted\\" \\u00e9\\t" # trailing comment
            'literal key' = 'C:\\no\\escapes'
            "quoted key" = 1_000_000
            hex = 0xff
            octal = 0o17
            binary = 0b101
            negative = -42
            float = 3.5e2
            inf = -inf
            yes = true
            no = false
            a.b.c = 1
            array = [
              1, 2,   # comment in an array
              3,
            ]
            nested = [[1], ["x"]]
            inline = { x = 1, y.z = "w" }
            multi = \"\"\"
            line one
            line two\\
              joined\"\"\"
            raw = '''
            no \\escape'''
            """)
        #expect(string(doc, "bare") == "basic \"quoted\" é\t")
        #expect(string(doc, "literal key") == "C:\\no\\escapes")
        #expect(integer(doc, "quoted key") == 1_000_000)
        #expect(integer(doc, "hex") == 255)
        #expect(integer(doc, "octal") == 15)
        #expect(integer(doc, "binary") == 5)
        #expect(integer(doc, "negative") == -42)
        if case .float(let f)? = doc["float"]?.item.value { #expect(f == 350) } else { Issue.record("float") }
        if case .float(let f)? = doc["inf"]?.item.value { #expect(f == -.infinity) } else { Issue.record("inf") }
        if case .boolean(let b)? = doc["yes"]?.item.value { #expect(b) } else { Issue.record("true") }
        #expect(integer(table(table(doc, "a")!, "b")!, "c") == 1)
        if case .array(let items)? = doc["array"]?.item.value {
            #expect(items.count == 3)
            #expect(items[2].position == TOMLPosition(line: 16, column: 3))
        } else { Issue.record("array") }
        let inline = table(doc, "inline")!
        #expect(integer(inline, "x") == 1)
        #expect(string(table(inline, "y")!, "z") == "w")
        #expect(string(doc, "multi") == "line one\nline twojoined")
        #expect(string(doc, "raw") == "no \\escape")
        // Positions of keys and values.
        #expect(doc["bare"]?.keyPosition == TOMLPosition(line: 2, column: 1))
        #expect(doc["bare"]?.item.position == TOMLPosition(line: 2, column: 8))
        #expect(doc["negative"]?.item.position == TOMLPosition(line: 8, column: 12))
    }

    @Test func tablesAndArraysOfTables() throws {
        let doc = try parse("""
            name = "t"

            [[export]]
            name = "one"
            [export.backend]
            kind = "posix"

            [[export]]
            name = "two"

            [x.y]
            z = 1
            [x]
            w = 2
            """)
        guard case .tableArray(let exports)? = doc["export"]?.item.value else { Issue.record("no exports"); return }
        #expect(exports.count == 2)
        #expect(exports[0].position == TOMLPosition(line: 3, column: 1))
        #expect(exports[1].position == TOMLPosition(line: 8, column: 1))
        #expect(string(table(exports[0], "backend")!, "kind") == "posix")
        #expect(table(exports[0], "backend")!.position.line == 5)
        #expect(table(exports[1], "backend") == nil)
        let x = table(doc, "x")!
        #expect(integer(x, "w") == 2)
        #expect(x.position.line == 13)      // defined by its own header, after [x.y]
        #expect(integer(table(x, "y")!, "z") == 1)
    }

    @Test func crlfAndUnicodeColumns() throws {
        let doc = try parse("a = 1\r\nb = \"é\" \r\nc = 2")
        #expect(doc["c"]?.keyPosition == TOMLPosition(line: 3, column: 1))
        #expect(failure("k = \"éé\" x") == "1:10: expected end of line after a value, found 'x'")
    }

    @Test(arguments: [
        ("a = 1\nb 2", "2:3: expected '=' after the key b, found '2'"),
        ("a = 1\nb =", "2:4: expected a value, found end of file"),
        ("a = \"open\nb = 1", "1:5: unterminated string (opened here): a basic string ends on its line"),
        ("a = 'open", "1:5: unterminated string (opened here)"),
        ("a = \"bad \\q escape\"", "1:10: invalid escape sequence '\\q'"),
        ("a = \"\\u12\"", "1:6: expected 4 hexadecimal digits after \\u"),
        ("a = 1\n\na = 2", "3:1: duplicate key a (first defined on line 1)"),
        ("[t]\nk = 1\nk = 2", "3:1: duplicate key k (first defined on line 2)"),
        ("[t]\n[u]\n[t]", "3:2: table [t] is defined twice (first on line 1)"),
        ("t = 1\n[t]", "2:2: t is already defined as an integer on line 1"),
        ("a.b = 1\na.b.c = 2", "2:3: a.b is already defined as an integer on line 1"),
        ("a = 1 b = 2", "1:7: expected end of line after a value, found 'b'"),
        ("a = hello", "1:5: expected a value, found 'h'"),
        ("a = nope", "1:5: expected a value (strings are quoted), found 'n'"),
        ("a = 012", "1:5: malformed number: leading zeros are not allowed"),
        ("a = 1__0", "1:5: malformed number: '_' must sit between two digits"),
        ("a = 1.", "1:5: malformed number: expected digits on both sides of '.'"),
        ("a = 99999999999999999999", "1:5: malformed number: out of the 64-bit integer range"),
        ("a = 2024-01-02", "1:5: dates and times are not supported here"),
        ("a = [1, 2", "1:5: unterminated array (opened here): expected ']'"),
        ("a = [1 2]", "1:8: expected ',' or ']' in the array, found '2'"),
        ("a = { x = 1, }", "1:12: trailing comma in an inline table (not allowed in TOML)"),
        ("a = { x = 1\n}", "1:12: expected ',' or '}' in the inline table, found end of line"),
        ("a = { x = 1 }\n[a.b]", "2:2: cannot extend a: an inline table is complete as written (line 1)"),
        ("[a\nb = 1", "1:3: expected ']' to close the table header, found end of line"),
        ("[[a]\n", "1:5: expected ']]' to close the array-of-tables header, found end of line"),
        ("[a] x", "1:5: expected end of line after the header, found 'x'"),
        ("= 1", "1:1: expected a key, found '='"),
        ("[t]\nx.y = 1\n[t.x]", "3:4: t.x is already defined as a table on line 2"),
        ("a = \"tab\u{01}\"", "1:9: control character U+0001 in a string (use an escape)"),
    ] as [(String, String)])
    func syntaxErrors(_ text: String, _ expected: String) {
        #expect(failure(text) == expected)
    }
}
