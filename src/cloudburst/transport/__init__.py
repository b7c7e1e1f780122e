"""Message transport: ZeroMQ sockets, endpoint parsing and the rules for whom a server may answer."""
