"""Token sources: documents from files, generators or the hub, tokenised and packed into contexts with BOS."""

from saelab.data.counts import parse_token_count
from saelab.data.packing import (
    ContextBatch,
    PackedContext,
    batch_contexts,
    bos_id_of,
    iter_contexts,
    make_encoder,
    pack_contexts,
)
from saelab.data.sources import (
    DataSourceError,
    FileSource,
    GeneratorSource,
    HubSource,
    TextSource,
    TextsSource,
    bundled_source,
    checked_source,
    hub_reachable,
    register_source_prefix,
    source_from_spec,
)

__all__ = [
    "ContextBatch",
    "DataSourceError",
    "FileSource",
    "GeneratorSource",
    "HubSource",
    "PackedContext",
    "TextSource",
    "TextsSource",
    "batch_contexts",
    "bos_id_of",
    "bundled_source",
    "checked_source",
    "hub_reachable",
    "iter_contexts",
    "make_encoder",
    "pack_contexts",
    "parse_token_count",
    "register_source_prefix",
    "source_from_spec",
]
