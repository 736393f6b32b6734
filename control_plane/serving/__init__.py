"""`nexus serve`: supervising the model server and the batching proxy as child processes."""
