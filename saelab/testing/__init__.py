"""Fixtures for tests, benchmarks and screenshots, never for research results: `demo_workspace` fills a
workspace with synthetic rows shaped like real ones; `stores.store_at_version` writes a store as an older
schema version did (migration tests); `planted_circuit` builds a tiny model whose circuit is
planted by hand (it imports TransformerLens, so import it from its module)."""

from saelab.testing.demo_workspace import DEMO_SAES, build_demo_workspace

__all__ = ["DEMO_SAES", "build_demo_workspace"]
