"""The lattice key-value store: storage engines, the Anna-protocol server and the client."""
