"""The sans-IO POP3 core: bytes in, events and bytes out. Standard library only."""
