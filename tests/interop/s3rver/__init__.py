"""s3rver, an S3 server for Node.js from the npm registry, as a second S3 implementation that
``asyncllm.S3`` is tested against (``tests/interop/test_s3rver.py``): pinned in
``package-lock.json``, installed by ``install.py``, run by ``server.py`` through ``serve.js``."""
