"""`pop3d serve` as a daemon: a supervisor process and its workers, privileges, systemd.

The supervisor binds (or takes from systemd) every listening socket, loads the TLS
certificate, gives up root, then forks the workers that serve POP3 and LMTP, and stays
behind to restart them, pass signals on, answer `pop3d who` and `pop3d kick`, serve the
Prometheus metrics of them all, and tell systemd how things stand.
"""
