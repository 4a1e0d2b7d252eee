import SnapbackCLIFastPath

/// snapback: the control commands on the fast path (no Foundation, ArgumentParser, LMDB or crypto
/// to load), everything else by exec of snapback-full beside it.
@main
enum Entry {
    static func main() {
        FastPath.main(arguments: CommandLine.arguments)
    }
}
