"""What every part of NexusML except the proxy may use: the error tree, hashing, sizes, formats."""
