"""The floor the three parts stand on: what more than one of them uses, and nothing else.

errors        the root of every part's error tree (NexusError) and file-format errors
wire          the batch contract between the proxy and the model server (/predict/batch)
v2wire        the Open Inference Protocol's JSON and binary tensor codec
runner        running a uvicorn server until SIGTERM/SIGINT, and the open-files limit
slow_clients  uvicorn's httptools protocol with a read deadline per request
memory        the startup heap frozen, the C heap trimmed after a burst
supervise     background loops restarted with backoff and named in /health
files         atomic writes beside their destination, and private (0600) JSON files
keyfiles      the proxy's API-key file format (`nexus keys`, `nexus-proxy --api-keys`)
settings      pydantic-settings over a given environment, and its errors in one sentence

It imports none of the parts (`lint-imports` holds it to that), so the proxy and the
model server stay siblings and the registry needs neither.
"""
