"""Models in worker processes: forked from a clean zygote, confined (seccomp, Landlock,
limits), lent one batch at a time through shared memory (docs/model-server.md)."""
