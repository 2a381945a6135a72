// Server core: see Driver.swift and Server.swift.
