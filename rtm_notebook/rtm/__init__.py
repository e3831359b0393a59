"""The RTM transport: the sans-I/O protocol (:mod:`.protocol`), one socket
(:mod:`.connection`), how sockets are asked for (:mod:`.transport`), and the
modern client that puts them under the session core (:mod:`.client`)."""
