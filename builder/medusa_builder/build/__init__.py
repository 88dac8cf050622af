"""Engine builds: the one cache key, the TensorRT-LLM commands, the reference bundle, the cache
entry and the build orchestration that the ``build`` and ``build-engine`` steps call.

Cache layout in the artifact store: ``{artifacts}/engines/{cacheKey}/`` holds the engine files
(``engine/``, ``tokenizer/``, ``tree.json``; for the reference backend ``base/``, ``heads/``,
``tree.json``) and ``manifest.json``. The manifest is uploaded last: its presence marks a complete
entry, so an interrupted upload is never a cache hit.
"""
