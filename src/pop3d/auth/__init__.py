"""Authentication: the user database interface, the passwd-file, password schemes."""
