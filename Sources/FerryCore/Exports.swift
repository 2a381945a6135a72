// Errno, `systemCall` and `OwnedFD` are part of the driver interface (drivers throw
// `Errno`), so every module that imports the core sees them.
@_exported import FerrySystem
