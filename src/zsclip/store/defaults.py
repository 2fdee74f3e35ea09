"""Store settings that option parsing needs: plain data, so that ``zsclip embed --help`` imports no pyarrow."""

#: Images per shard: a killed run loses at most this many, and resumes from there.
COMMIT_EVERY = 1024
