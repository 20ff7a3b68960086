"""mmu-notifier-harness: QEMU-based kernel integration tests for mmu_notifier events (see harness/app/).

PYTEST_DONT_REWRITE: pytest marks the package of its `harness` plugin (the pytest11 entry point) for assert
rewriting. `harness run` imports this package before it starts pytest in-process, so pytest could not rewrite
it and warned so (PytestAssertRewriteWarning) on every run; this package file holds no assertion, and this
marker tells pytest so. The modules under it are still rewritten when pytest imports them first.
"""
