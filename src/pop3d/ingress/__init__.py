"""Mail coming in: the delivery logic, the LMTP listener and the `pop3d deliver` agent."""
